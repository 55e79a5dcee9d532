package route

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// crAPI's routes (from ../shared/corpora/openapi/crapi) as a client would
// send them: fixed routes next to templated ones, version tokens, and the
// kinds of ids crAPI really hands out (integers, UUIDs, short base57 ids).
func TestLookupTemplatesCrAPIPaths(t *testing.T) {
	cases := []struct {
		name, path, want string
	}{
		{"fixed_route_stays", "/identity/api/auth/signup", "/identity/api/auth/signup"},
		{"kebab_word_stays", "/identity/api/auth/forget-password", "/identity/api/auth/forget-password"},
		{"version_token_stays", "/identity/api/auth/v3/check-otp", "/identity/api/auth/v3/check-otp"},
		{"dotted_version_stays", "/identity/api/auth/v4.0/user/login-with-token", "/identity/api/auth/v4.0/user/login-with-token"},
		{"integer_video_id", "/identity/api/v2/user/videos/42", "/identity/api/v2/user/videos/{id}"},
		{"snake_word_beside_id", "/identity/api/v2/user/videos/convert_video", "/identity/api/v2/user/videos/convert_video"},
		{"uuid_vehicle_id", "/identity/api/v2/vehicle/0be319d8-3c5b-4ba4-9e0f-2a1a4f1d3c55/location", "/identity/api/v2/vehicle/{id}/location"},
		{"word_beside_uuid", "/identity/api/v2/vehicle/add_vehicle", "/identity/api/v2/vehicle/add_vehicle"},
		{"base57_post_id", "/community/api/v2/community/posts/ConZLXacq3MqhbLQDrbACi", "/community/api/v2/community/posts/{id}"},
		{"base57_post_id_then_word", "/community/api/v2/community/posts/ConZLXacq3MqhbLQDrbACi/comment", "/community/api/v2/community/posts/{id}/comment"},
		{"recent_stays_literal", "/community/api/v2/community/posts/recent", "/community/api/v2/community/posts/recent"},
		{"order_all_is_not_an_id", "/workshop/api/shop/orders/all", "/workshop/api/shop/orders/all"},
		{"order_id", "/workshop/api/shop/orders/1007", "/workshop/api/shop/orders/{id}"},
		{"trailing_slash_ignored", "/workshop/api/mechanic/", "/workshop/api/mechanic"},
		{"root", "/", "/"},
		{"double_slash_ignored", "//workshop//api/shop/products", "/workshop/api/shop/products"},
	}
	tab := NewTable(Options{})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tab.Lookup([]byte(tc.path))
			if r.Template != tc.want {
				t.Fatalf("Lookup(%q) = %q, want %q", tc.path, r.Template, tc.want)
			}
			if again := tab.Lookup([]byte(tc.path)); again != r {
				t.Fatalf("second Lookup(%q) returned another handle", tc.path)
			}
		})
	}
}

func TestClassifyKinds(t *testing.T) {
	cases := []struct {
		seg  string
		want Kind
	}{
		{"123", Integer},
		{"0", Integer},
		{"550e8400-e29b-41d4-a716-446655440000", UUID},
		{"9f1c2e77aa01", Hex},
		{"d41d8cd98f00b204e9800998ecf8427e", Hex},
		{"2024-01-05", Date},
		{"2024-01-05T10:00:00Z", Date},
		{"alice@example.com", Email},
		{"ord_8f3k2j9q", Token},
		{"aGVsbG8gd29ybGQ=", Token},
		{"eyJhbGciOiJIUzI1NiJ9", Token},
		{"caf%C3%A9", Token},
		{"1.5", Token},
		{"users", Literal},
		{"convert_video", Literal},
		{"reset-password", Literal},
		{"getUserById", Literal},
		{"API", Literal},
		{"XMLParser", Token}, // acronym-led camel case reads like base64; the node cap is the backstop
		{"v1", Literal},
		{"v2beta1", Literal},
		{"oauth2", Literal},
		{"ipv4", Literal},
		{"s3", Literal},
		{"index.html", Literal},
		{"deadbeef", Literal}, // hex letters only read as a word; the node cap is the backstop
		{"2fa", Token},
		{"2024-13-01", Token}, // no month 13: not a date
		{strings.Repeat("a", 49), Token},
	}
	for _, tc := range cases {
		if got := Classify([]byte(tc.seg)); got != tc.want {
			t.Errorf("Classify(%q) = %v, want %v", tc.seg, got, tc.want)
		}
	}
}

// Property: identifiers of every kind a service hands out never stay
// literal, and dictionary words (and version tokens) always do. The
// generator is seeded so a failure names a reproducible value.
func TestClassifyProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	gens := map[string]func() string{
		"integer": func() string { return fmt.Sprint(rng.Uint64N(1 << 40)) },
		"uuid": func() string {
			h := hex.EncodeToString(randBytes(16))
			return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
		},
		"hex_hash":  func() string { return hex.EncodeToString(randBytes(4 + rng.IntN(29))) },
		"base64url": func() string { return base64.RawURLEncoding.EncodeToString(randBytes(12 + rng.IntN(24))) },
		"base64std": func() string { return base64.StdEncoding.EncodeToString(randBytes(12 + rng.IntN(24))) },
		"date": func() string {
			return fmt.Sprintf("%04d-%02d-%02d", 1970+rng.IntN(100), 1+rng.IntN(12), 1+rng.IntN(28))
		},
		"email": func() string {
			return fmt.Sprintf("user%d@example%d.org", rng.IntN(1e6), rng.IntN(100))
		},
		// Stripe-style ids: a type prefix and 14 to 24 base62 characters.
		"prefixed_id": func() string {
			const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			b := []byte([]string{"ord_", "cus_", "pi_", "inv-"}[rng.IntN(4)])
			for n := 14 + rng.IntN(11); n > 0; n-- {
				b = append(b, base62[rng.IntN(62)])
			}
			return string(b)
		},
	}
	for name, gen := range gens {
		for i := 0; i < 2000; i++ {
			s := gen()
			// hex_hash may legitimately draw only hex letters ("deadbeef"),
			// which reads as a word; that is the only allowed exception.
			if name == "hex_hash" && strings.IndexAny(s, "0123456789") < 0 {
				continue
			}
			if k := Classify([]byte(s)); k == Literal {
				t.Fatalf("%s %q stayed literal", name, s)
			}
		}
	}
	for _, w := range englishWords {
		if k := Classify([]byte(w)); k != Literal {
			t.Errorf("word %q classified %v", w, k)
		}
	}
	for v := 1; v <= 30; v++ {
		if k := Classify([]byte(fmt.Sprintf("v%d", v))); k != Literal {
			t.Errorf("version v%d classified %v", v, k)
		}
	}
}

// englishWords are route words from public APIs: plain, plural, compound
// in the usual case styles.
var englishWords = strings.Fields(`
users user orders order products product items cart checkout payments invoices customers accounts account
profile settings preferences notifications messages comments posts recent popular trending search login logout
signup register verify confirm reset password forgot token refresh session sessions health healthz readyz metrics
status version info admin management reports report export import upload download files images videos pictures
dashboard vehicles vehicle location locations community coupon coupons validate apply shop mechanic merchant
contact receive service requests strengths rhythms queue jobs tasks workers events webhooks subscriptions plans
billing usage limits quotas teams members roles permissions groups organizations projects repositories branches
commits pulls issues labels milestones releases tags assets convert_video add_vehicle return_order resend_email
mechanic_report service_requests contact_mechanic forget-password check-otp login-with-token reset-password
change-email verify-email-token new-coupon validate-coupon getUserById listOrders createPaymentIntent 
api graphql rest rpc openapi swagger docs oauth2 ipv4 ipv6 s3 ec2 http2 index.html robots.txt
favicon.ico well-known .well-known
`)

func TestNodeCapCollapsesSlugs(t *testing.T) {
	tab := NewTable(Options{MaxChildren: 8})
	// User names look like words; past the cap they become a parameter.
	for i := 0; i < 20; i++ {
		name := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
			"mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "zoe"}[i]
		tab.Lookup([]byte("/profiles/" + name))
	}
	if got := tab.Lookup([]byte("/profiles/yvonne")).Template; got != "/profiles/{id}" {
		t.Fatalf("after collapse got %q, want /profiles/{id}", got)
	}
	// Children learned before the collapse keep their handles.
	if got := tab.Lookup([]byte("/profiles/alice")).Template; got != "/profiles/alice" {
		t.Fatalf("pre-collapse child got %q", got)
	}
	if tab.Collapses() != 1 {
		t.Fatalf("collapses = %d, want 1", tab.Collapses())
	}
}

func TestTableBoundedUnderRandomPaths(t *testing.T) {
	tab := NewTable(Options{MaxRoutes: 100})
	rng := rand.New(rand.NewPCG(3, 4))
	letters := "abcdefghijklmnopqrstuvwxyz"
	for i := 0; i < 20000; i++ {
		var b strings.Builder
		for d := 0; d < 1+rng.IntN(30); d++ {
			b.WriteByte('/')
			for k := 0; k < 3+rng.IntN(6); k++ {
				b.WriteByte(letters[rng.IntN(26)])
			}
		}
		tab.Lookup([]byte(b.String()))
	}
	if tab.Len() > 100 {
		t.Fatalf("routes = %d, cap 100", tab.Len())
	}
	if tab.nodes > 100*nodesPerRoute {
		t.Fatalf("nodes = %d, cap %d", tab.nodes, 100*nodesPerRoute)
	}
	if tab.Overflowed() == 0 {
		t.Fatal("a full table answered no lookup with the overflow route")
	}
}

func TestDeepPathOverflows(t *testing.T) {
	tab := NewTable(Options{MaxDepth: 4})
	if r := tab.Lookup([]byte("/a/b/c/d/e")); !r.Overflow {
		t.Fatalf("5-deep path got %q, want overflow", r.Template)
	}
	if r := tab.Lookup([]byte("/a/b/c/d")); r.Template != "/a/b/c/d" {
		t.Fatalf("4-deep path got %q", r.Template)
	}
}

func TestParamKindsRecorded(t *testing.T) {
	tab := NewTable(Options{})
	tab.Lookup([]byte("/users/12/files/2024-02-03"))
	r := tab.Lookup([]byte("/users/7/files/2023-12-31"))
	k := r.ParamKinds()
	if len(k) != 2 || k[0] != 1<<Integer || k[1] != 1<<Date {
		t.Fatalf("ParamKinds = %b, want [integer date]", k)
	}
	if r.ParamMask != 0b1010 {
		t.Fatalf("ParamMask = %b, want 1010", r.ParamMask)
	}
	if m := tab.Intern("/api/v1/orders/{orderId}/items/{itemId}").ParamMask; m != 0b101000 {
		t.Fatalf("interned ParamMask = %b, want 101000", m)
	}
}

func TestInternSharesIDSpace(t *testing.T) {
	tab := NewTable(Options{})
	a := tab.Lookup([]byte("/x/1"))
	b := tab.Intern("/orders/{orderId}")
	if a.ID == b.ID || !b.Declared || tab.Intern("/orders/{orderId}") != b {
		t.Fatalf("intern: learned %d declared %d", a.ID, b.ID)
	}
	if tab.Routes()[b.ID] != b {
		t.Fatal("Routes() does not index the interned route by ID")
	}
}

func TestLookupKnownRouteDoesNotAllocate(t *testing.T) {
	tab := NewTable(Options{})
	p := []byte("/identity/api/v2/user/videos/31337")
	tab.Lookup(p)
	if n := testing.AllocsPerRun(1000, func() { tab.Lookup(p) }); n != 0 {
		t.Fatalf("Lookup allocates %.1f times per known route", n)
	}
}

func FuzzLookup(f *testing.F) {
	for _, s := range []string{"/", "/users/1", "/a//b/", "/v1/orders/all", "/x/%2F..", "/\xff/\x00", "/2024-01-01/a@b.c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		tab := NewTable(Options{MaxRoutes: 16, MaxChildren: 4, MaxDepth: 8})
		r := tab.Lookup([]byte(path))
		if r == nil {
			t.Fatal("nil route")
		}
		if again := tab.Lookup([]byte(path)); again != r {
			t.Fatalf("unstable: %q then %q", r.Template, again.Template)
		}
		if !r.Overflow {
			want := 0
			for _, s := range strings.Split(path, "/") {
				if s != "" {
					want++
				}
			}
			got := 0
			for _, s := range strings.Split(r.Template, "/") {
				if s != "" {
					got++
				}
			}
			if got != want {
				t.Fatalf("template %q has %d segments, path %q has %d", r.Template, got, path, want)
			}
		}
	})
}

func BenchmarkLookupKnown(b *testing.B) {
	tab := NewTable(Options{})
	p := []byte("/identity/api/v2/vehicle/0be319d8-3c5b-4ba4-9e0f-2a1a4f1d3c55/location")
	tab.Lookup(p)
	b.ReportAllocs()
	for b.Loop() {
		tab.Lookup(p)
	}
}

func TestFindLearnsNothing(t *testing.T) {
	tab := NewTable(Options{})
	known := tab.Lookup([]byte("/api/users/42/orders"))
	routes := tab.Len()
	for _, tc := range []struct {
		path string
		want *Route
	}{
		{"/api/users/42/orders", known},
		{"/api/users/977/orders", known}, // the number is a parameter
		{"/api/users/42/invoices", nil},  // a new literal: Lookup would learn it
		{"/api/users", nil},              // a node without a route
		{"/other", nil},
	} {
		if got := tab.Find([]byte(tc.path)); got != tc.want {
			t.Errorf("Find(%s) = %v, want %v", tc.path, got, tc.want)
		}
	}
	if tab.Len() != routes {
		t.Fatalf("Find learned routes: %d in the table, %d before", tab.Len(), routes)
	}
}
