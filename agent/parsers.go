package agent

import (
	"github.com/apisonar/apisonar/parser"
)

// NewParserFactory returns the ParserFactory that builds the parser of each
// protocol with the given bounds, all counting into stats.
func NewParserFactory(opts parser.Options, stats *parser.Stats) ParserFactory {
	return func(proto parser.Protocol, info *parser.ConnInfo, emit parser.Emitter) parser.StreamParser {
		// Filled in as the protocol packages land.
		return nil
	}
}
