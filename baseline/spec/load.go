package spec

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi2"
	"github.com/getkin/kin-openapi/openapi2conv"
	"github.com/getkin/kin-openapi/openapi3"
	ghodss "github.com/oasdiff/yaml"
	"go.yaml.in/yaml/v3"
)

// Error is a spec that could not be loaded: the file, the place in it when
// known (line, or a JSON pointer / element path), and why.
type Error struct {
	File  string
	Line  int    // 1-based; 0 when unknown
	Place string // e.g. "paths./pets.get"; empty when unknown
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Place != "" {
		b.WriteString(": at ")
		b.WriteString(e.Place)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Load reads every OpenAPI 3.x or Swagger 2.0 document named by paths. A
// path is a file or a folder; folders are walked for *.json, *.yaml and
// *.yml files, and files in them that are not a root document (fragments
// other files $ref) are skipped. A file named directly must be a root
// document. Documents are grouped into APIs by title; the newest version of
// each is current.
//
// References to other files resolve relative to the file; references to
// remote URLs are refused, so loading a spec never touches the network.
func Load(paths ...string) (*Catalog, error) {
	var docs []*Doc
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, &Error{File: p, Err: errors.Unwrap(err)}
		}
		if !fi.IsDir() {
			d, err := LoadFile(p)
			if err != nil {
				return nil, err
			}
			docs = append(docs, d)
			continue
		}
		err = filepath.WalkDir(p, func(f string, de fs.DirEntry, err error) error {
			if err != nil {
				return &Error{File: f, Err: err}
			}
			if de.IsDir() || !isSpecName(f) {
				return nil
			}
			data, err := os.ReadFile(f)
			if err != nil {
				return &Error{File: f, Err: err}
			}
			kind, err := rootKind(data)
			if err != nil {
				e := err.(*Error)
				e.File = f
				return e
			}
			if kind == "" {
				return nil // a fragment or an unrelated file
			}
			d, err := loadData(f, data)
			if err != nil {
				return err
			}
			docs = append(docs, d)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return NewCatalog(docs), nil
}

func isSpecName(f string) bool {
	switch strings.ToLower(filepath.Ext(f)) {
	case ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// LoadFile reads one root document.
func LoadFile(file string) (*Doc, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &Error{File: file, Err: err}
	}
	return loadData(file, data)
}

// rootKind parses data as YAML (a superset of JSON) and tells whether it is
// a Swagger 2.0 ("swagger") or OpenAPI 3.x ("openapi") root document. A
// syntax error comes back as an *Error without its file.
func rootKind(data []byte) (string, error) {
	root, err := parseNode(data)
	if err != nil || root == nil {
		return "", err
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		switch root.Content[i].Value {
		case "swagger", "openapi":
			return root.Content[i].Value, nil
		}
	}
	return "", nil
}

// parseNode returns the top-level mapping of a document, or nil when the
// document is not a mapping.
func parseNode(data []byte) (*yaml.Node, error) {
	if t := bytes.TrimLeft(data, " \t\r\n"); len(t) > 0 && t[0] == '{' {
		// JSON: its own parser reports the exact offset of a mistake,
		// where the YAML parser reports the start of the enclosing object.
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				line := 1 + bytes.Count(data[:se.Offset], []byte("\n"))
				return nil, &Error{Line: line, Err: fmt.Errorf("not valid JSON: %w", err)}
			}
			return nil, &Error{Err: fmt.Errorf("not valid JSON: %w", err)}
		}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{Line: yamlLine(err), Err: fmt.Errorf("not valid YAML or JSON: %w", err)}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, nil
	}
	return doc.Content[0], nil
}

// checkShape catches the structural mistakes the loader would report
// without a place (a path item that is not a mapping and the like), and
// names the element and its line.
func checkShape(root *yaml.Node) *Error {
	paths := mapValue(root, "paths")
	if paths == nil {
		return nil
	}
	if paths.Kind != yaml.MappingNode {
		return &Error{Line: paths.Line, Place: "paths", Err: errors.New("must be a mapping of path templates")}
	}
	for i := 0; i+1 < len(paths.Content); i += 2 {
		k, item := paths.Content[i], paths.Content[i+1]
		place := "paths." + k.Value
		if !strings.HasPrefix(k.Value, "/") {
			return &Error{Line: k.Line, Place: place, Err: errors.New("a path template must start with '/'")}
		}
		if item.Kind != yaml.MappingNode {
			return &Error{Line: item.Line, Place: place, Err: errors.New("a path item must be a mapping")}
		}
		for j := 0; j+1 < len(item.Content); j += 2 {
			m, op := item.Content[j], item.Content[j+1]
			if MethodIndex([]byte(strings.ToUpper(m.Value))) == MethodOther {
				continue
			}
			if op.Kind != yaml.MappingNode {
				return &Error{Line: op.Line, Place: place + "." + m.Value, Err: errors.New("an operation must be a mapping")}
			}
			if r := mapValue(op, "responses"); r != nil && r.Kind != yaml.MappingNode {
				return &Error{Line: r.Line, Place: place + "." + m.Value + ".responses", Err: errors.New("must be a mapping of status codes")}
			}
		}
	}
	return nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// yamlLine extracts "line N" from a YAML parser error.
func yamlLine(err error) int {
	s := err.Error()
	i := strings.Index(s, "line ")
	if i < 0 {
		return 0
	}
	j := i + 5
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	n, _ := strconv.Atoi(s[i+5 : j])
	return n
}

func loadData(file string, data []byte) (d *Doc, err error) {
	defer func() {
		// The loader library has panicked on odd documents before; a spec
		// is user input, and a user mistake must be an error, not a crash.
		if r := recover(); r != nil {
			d, err = nil, &Error{File: file, Err: fmt.Errorf("cannot load: %v", r)}
		}
	}()
	kind, err := rootKind(data)
	if err != nil {
		e := err.(*Error)
		e.File = file
		return nil, e
	}
	if kind == "" {
		return nil, &Error{File: file, Err: errors.New("not an OpenAPI or Swagger document (no top-level \"openapi\" or \"swagger\" key)")}
	}
	if root, _ := parseNode(data); root != nil {
		if e := checkShape(root); e != nil {
			e.File = file
			return nil, e
		}
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return nil, &Error{File: file, Err: err}
	}
	loc := &url.URL{Path: filepath.ToSlash(abs)}
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = true
	loader.ReadFromURIFunc = localOnly
	var t *openapi3.T
	if kind == "swagger" {
		var d2 openapi2.T
		if _, err := ghodss.Unmarshal(data, &d2, ghodss.DecodeOpts{}); err != nil {
			return nil, &Error{File: file, Err: err}
		}
		if !strings.HasPrefix(d2.Swagger, "2.") {
			return nil, &Error{File: file, Place: "swagger", Err: fmt.Errorf("unsupported Swagger version %q", d2.Swagger)}
		}
		t, err = openapi2conv.ToV3WithLoader(&d2, loader, loc)
	} else {
		t, err = loader.LoadFromDataWithPath(data, loc)
	}
	if err != nil {
		return nil, &Error{File: file, Place: placeOf(err), Err: err}
	}
	if kind == "openapi" && !strings.HasPrefix(t.OpenAPI, "3.") {
		return nil, &Error{File: file, Place: "openapi", Err: fmt.Errorf("unsupported OpenAPI version %q", t.OpenAPI)}
	}
	d = newDoc(file, t)
	// Validation problems are kept as warnings: real specs often carry a
	// wrong example or an extension in the wrong place, and the routes
	// are still worth matching against.
	opts := []openapi3.ValidationOption{openapi3.DisableExamplesValidation(), openapi3.DisableSchemaDefaultsValidation(),
		openapi3.DisableSchemaPatternValidation(), openapi3.AllowExtraSiblingFields("summary", "kind", "parent")}
	if verr := t.Validate(context.Background(), opts...); verr != nil {
		d.Warnings = append(d.Warnings, verr.Error())
	}
	return d, nil
}

// placeOf pulls the element path a kin-openapi error names, if any.
func placeOf(err error) string {
	s := err.Error()
	for _, marker := range []string{"failed to unmarshal property \"", "error resolving reference \"", "bad data in \""} {
		if i := strings.Index(s, marker); i >= 0 {
			rest := s[i+len(marker):]
			if j := strings.IndexByte(rest, '"'); j >= 0 {
				return rest[:j]
			}
		}
	}
	return ""
}

// localOnly reads $ref targets from local files only.
func localOnly(loader *openapi3.Loader, u *url.URL) ([]byte, error) {
	if u.Scheme != "" && u.Scheme != "file" {
		return nil, fmt.Errorf("reference to %s refused: only local files are read", u.Redacted())
	}
	if u.Host != "" {
		return nil, fmt.Errorf("reference to %s refused: only local files are read", u.Redacted())
	}
	p := filepath.FromSlash(u.Path)
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	// A device or a FIFO would block or never end.
	if !fi.Mode().IsRegular() || fi.Size() > maxRefFile {
		return nil, fmt.Errorf("reference to %s refused: not a regular file of at most %d MiB", p, maxRefFile>>20)
	}
	return os.ReadFile(p)
}

const maxRefFile = 64 << 20

// compareVersions orders info.version strings: numeric dot-separated parts
// compare as numbers, anything else as text.
func compareVersions(a, b string) int {
	pa := strings.FieldsFunc(strings.TrimPrefix(strings.TrimPrefix(a, "v"), "V"), versionSep)
	pb := strings.FieldsFunc(strings.TrimPrefix(strings.TrimPrefix(b, "v"), "V"), versionSep)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		switch {
		case ea == nil && eb == nil:
			if na != nb {
				if na < nb {
					return -1
				}
				return 1
			}
		case ea == nil:
			return 1 // 1.0.0 is newer than 1.0.0-beta
		case eb == nil:
			return -1
		default:
			if c := strings.Compare(pa[i], pb[i]); c != 0 {
				return c
			}
		}
	}
	switch {
	case len(pa) < len(pb):
		// "1.0" against "1.0.rc1": the release is newer.
		if _, err := strconv.Atoi(pb[len(pa)]); err != nil {
			return 1
		}
		return -1
	case len(pa) > len(pb):
		if _, err := strconv.Atoi(pa[len(pb)]); err != nil {
			return -1
		}
		return 1
	}
	return 0
}

func versionSep(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' }

func sortDocs(docs []*Doc) {
	sort.SliceStable(docs, func(i, j int) bool { return compareVersions(docs[i].Version, docs[j].Version) > 0 })
}
