package agent

import (
	"github.com/apisonar/apisonar/parser"
	"github.com/apisonar/apisonar/parser/http1"
	"github.com/apisonar/apisonar/parser/http2"
)

// NewParserFactory returns the ParserFactory that builds the parser of each
// protocol with the given bounds, all counting into stats.
func NewParserFactory(opts parser.Options, stats *parser.Stats) ParserFactory {
	return func(proto parser.Protocol, info *parser.ConnInfo, emit parser.Emitter) parser.StreamParser {
		switch proto {
		case parser.ProtoHTTP1:
			return http1.New(info, emit, stats, opts)
		case parser.ProtoHTTP2:
			return http2.New(info, emit, stats, opts)
		}
		return nil
	}
}
