// Command apiservice is a small stand-in for VAmPI (testdata/vampi), the
// service that cmd/apisonar's inventory tests watch. It serves some of the
// operations that VAmPI's spec declares, as the spec describes them, and a
// few things the spec does not say, each on purpose:
//
//   - GET /admin/export and POST /admin/users/{id}/promote are declared
//     nowhere (shadow_api);
//   - DELETE /books/v1/{book_title} is declared only by the older version
//     0.0 of the spec (zombie_api, removed);
//   - POST /users/v1/register answers 409 for a taken name, a status the
//     spec does not declare (undocumented_status);
//   - GET /books/v1 honours ?limit=N, a query parameter the spec does not
//     declare (undocumented_parameter);
//   - GET /users/v1/{username} returns "admin", a field its response
//     schema does not declare (undocumented_field).
//
// Everything else answers exactly what the spec declares. It is built and
// run by the tests (go build), never by go test itself.
package main

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

type user struct {
	Username string
	Email    string
	Password string
	Admin    bool
}

type book struct {
	Title, Owner, Secret string
}

type store struct {
	mu     sync.Mutex
	users  map[string]*user
	books  []book
	tokens map[string]string // token → username
}

func newStore() *store {
	s := &store{users: map[string]*user{}, tokens: map[string]string{}}
	for _, u := range []*user{
		{"name1", "mail1@mail.com", "pass1", false},
		{"name2", "mail2@mail.com", "pass2", false},
		{"admin", "admin@mail.com", "pass1", true},
	} {
		s.users[u.Username] = u
	}
	for i, o := range []string{"name1", "name2", "admin", "name1"} {
		t := "bookTitle" + strconv.Itoa(10+i)
		s.books = append(s.books, book{t, o, "secret for " + t})
	}
	return s
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"status": "fail", "message": msg})
}

func (s *store) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"message": "VAmPI the Vulnerable API", "help": "a stand-in for apisonar's tests", "vulnerable": 1})
	})
	mux.HandleFunc("GET /users/v1", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		var out []map[string]string
		for _, u := range s.users {
			out = append(out, map[string]string{"email": u.Email, "username": u.Username})
		}
		writeJSON(w, 200, map[string]any{"users": out})
	})
	mux.HandleFunc("GET /users/v1/{username}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		u := s.users[r.PathValue("username")]
		s.mu.Unlock()
		if u == nil {
			fail(w, 404, "User not found")
			return
		}
		// "admin" is not in the spec's response schema.
		writeJSON(w, 200, map[string]any{"username": u.Username, "email": u.Email, "admin": u.Admin})
	})
	mux.HandleFunc("POST /users/v1/register", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Username, Password, Email string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.Username == "" || in.Password == "" {
			writeJSON(w, 400, map[string]string{"status": "fail", "message": "Invalid request"})
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, taken := s.users[in.Username]; taken {
			// The spec declares 200 and 400 only.
			fail(w, http.StatusConflict, "User already exists. Please Log in.")
			return
		}
		s.users[in.Username] = &user{Username: in.Username, Email: in.Email, Password: in.Password}
		writeJSON(w, 200, map[string]string{"message": "Successfully registered. Login to receive an auth token.", "status": "success"})
	})
	mux.HandleFunc("POST /users/v1/login", func(w http.ResponseWriter, r *http.Request) {
		var in struct{ Username, Password string }
		json.NewDecoder(r.Body).Decode(&in)
		s.mu.Lock()
		defer s.mu.Unlock()
		u := s.users[in.Username]
		if u == nil || u.Password != in.Password {
			fail(w, 400, "Password is not correct for the given username.")
			return
		}
		tok := token(u.Username)
		s.tokens[tok] = u.Username
		writeJSON(w, 200, map[string]string{"auth_token": tok, "message": "Successfully logged in.", "status": "success"})
	})
	mux.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		name, ok := s.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		if !ok {
			fail(w, 401, "Invalid token. Please log in again.")
			return
		}
		u := s.users[name]
		writeJSON(w, 200, map[string]any{"data": map[string]any{"admin": u.Admin, "email": u.Email, "username": u.Username}, "status": "success"})
	})
	mux.HandleFunc("GET /books/v1", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		n := len(s.books)
		if l, err := strconv.Atoi(r.URL.Query().Get("limit")); err == nil && l >= 0 && l < n {
			n = l // "limit" is not declared by the spec
		}
		out := []map[string]string{}
		for _, b := range s.books[:n] {
			out = append(out, map[string]string{"book_title": b.Title, "user": b.Owner})
		}
		writeJSON(w, 200, map[string]any{"Books": out})
	})
	// Declared by version 0.0 only: version 0.1 removed it.
	mux.HandleFunc("DELETE /books/v1/{book_title}", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, b := range s.books {
			if b.Title == r.PathValue("book_title") {
				// Deleting is not what this test is about: the books stay.
				writeJSON(w, 200, map[string]string{"message": "Book deleted.", "status": "success"})
				return
			}
		}
		fail(w, 404, "Book not found!")
	})
	// Declared nowhere.
	mux.HandleFunc("GET /admin/export", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		writeJSON(w, 200, map[string]any{"users": len(s.users), "books": len(s.books)})
	})
	mux.HandleFunc("POST /admin/users/{id}/promote", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]string{"id": r.PathValue("id"), "status": "promoted"})
	})
	return mux
}

// token is a JWT-shaped token naming the user (unsigned: nothing here
// checks it but this service).
func token(name string) string {
	enc := base64.RawURLEncoding
	h := enc.EncodeToString([]byte(`{"typ":"JWT","alg":"HS256"}`))
	p := enc.EncodeToString([]byte(`{"sub":"` + name + `"}`))
	return h + "." + p + "." + enc.EncodeToString([]byte("apiservice"))
}

func main() {
	addr := flag.String("listen", "127.0.0.1:5000", "listen `address`")
	flag.Parse()
	log.Fatal(http.ListenAndServe(*addr, newStore().routes()))
}
