package export

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// PrometheusContentType is the Content-Type of WritePrometheus's output.
const PrometheusContentType = "text/plain; version=0.0.4; charset=utf-8"

// WritePrometheus writes the metrics in the Prometheus text exposition
// format (version 0.0.4), named the way OTel's Prometheus compatibility
// rules name them: dots become underscores, the unit becomes a suffix
// (_seconds, _bytes), counters end in _total, and the resource becomes a
// target_info sample. rpc.server.duration, in milliseconds over OTLP, is
// rpc_server_duration_seconds here, because Prometheus wants base units.
//
// It copies the counts under the aggregation lock and writes outside it,
// so a slow reader never holds up ObserveCall.
func (e *Exporter) WritePrometheus(w io.Writer) error {
	pts := e.red.snapshot(nil)
	bw := bufio.NewWriterSize(w, 32<<10)

	bw.WriteString("# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info{")
	for i, kv := range e.res.Attributes() {
		if i > 0 {
			bw.WriteByte(',')
		}
		bw.WriteString(promName(string(kv.Key)))
		bw.WriteString(`="`)
		bw.WriteString(escapeLabel(kv.Value.Emit()))
		bw.WriteByte('"')
	}
	bw.WriteString("} 1\n")

	var num []byte
	for _, fam := range families {
		header := false
		for i := range pts {
			p := &pts[i]
			if p.s.fam != fam {
				continue
			}
			if !header {
				bw.WriteString("# HELP " + fam.promName + " " + fam.desc + "\n")
				bw.WriteString("# TYPE " + fam.promName + " histogram\n")
				header = true
			}
			num = writeHistogram(bw, fam, p, num)
		}
	}

	for _, h := range healthMetrics(e.health()) {
		typ := "counter"
		if h.gauge {
			typ = "gauge"
		}
		bw.WriteString("# HELP " + h.prom + " " + helpEscaper.Replace(strings.ToValidUTF8(h.name, "\uFFFD")) + "\n")
		bw.WriteString("# TYPE " + h.prom + " " + typ + "\n")
		bw.WriteString(h.prom + " " + strconv.FormatUint(h.value, 10) + "\n")
	}
	return bw.Flush()
}

// writeHistogram writes one series piecewise: with 10,000 series and 17
// lines each, building strings per line would dominate a scrape.
func writeHistogram(bw *bufio.Writer, fam *family, p *point, num []byte) []byte {
	labels := p.s.labels
	sample := func(suffix string, le string, v []byte) {
		bw.WriteString(fam.promName)
		bw.WriteString(suffix)
		if labels != "" || le != "" {
			bw.WriteByte('{')
			bw.WriteString(labels)
			if le != "" {
				if labels != "" {
					bw.WriteByte(',')
				}
				bw.WriteString(`le="`)
				bw.WriteString(le)
				bw.WriteByte('"')
			}
			bw.WriteByte('}')
		}
		bw.WriteByte(' ')
		bw.Write(v)
		bw.WriteByte('\n')
	}
	var cum uint64
	for i := range fam.bounds {
		cum += p.counts[i]
		num = strconv.AppendUint(num[:0], cum, 10)
		sample("_bucket", fam.promBounds[i], num)
	}
	num = strconv.AppendUint(num[:0], p.count, 10)
	sample("_bucket", "+Inf", num)
	num = strconv.AppendFloat(num[:0], p.sum/fam.promDiv, 'g', -1, 64)
	sample("_sum", "", num)
	num = strconv.AppendUint(num[:0], p.count, 10)
	sample("_count", "", num)
	return num
}

// helpEscaper escapes HELP text, where only backslash and newline are
// special.
var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
