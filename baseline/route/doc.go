// Package route turns observed request paths into route templates, online,
// as calls arrive: "/users/123/orders/9f1c2e77aa" becomes
// "/users/{id}/orders/{id}".
//
// Classify decides, one segment at a time, whether a segment is a literal
// route word (users, convert_video, v2, oauth2) or a parameter value
// (numbers, UUIDs, hex hashes, dates, e-mail addresses, base64 and other
// mixed tokens). A Table holds the learned tree of one service: a node whose
// distinct literal children exceed Options.MaxChildren collapses, so that
// values the classifier took for words (user names, slugs) end up as one
// parameter instead of one route each.
//
// Invariants:
//   - A Route handle is interned: one per template per Table, never changed
//     or freed once issued; IDs are dense from 0 (0 is the overflow route).
//   - Memory is bounded: at most MaxRoutes routes per Table and MaxDepth
//     segments per path; what does not fit maps to the overflow route and is
//     counted.
//   - Lookup of a known path takes no lock and does not allocate; it is safe
//     for concurrent use with other Lookups and with Intern.
//   - A collapse only affects segments seen after it: literal children that
//     were learned before keep their routes, so handles stay stable.
//
// The package has no I/O, no clock and no package-level state.
package route
