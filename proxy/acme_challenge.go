package proxy

import (
	"bytes"
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tollgate-proxy/tollgate/proxy/h1"
)

// acmeChallengePrefix is where an ACME CA fetches HTTP-01 challenge
// answers (RFC 8555 §8.3).
const acmeChallengePrefix = "/.well-known/acme-challenge/"

// challengeTimeout bounds looking a challenge up (certmagic may read its
// storage for one another instance started).
const challengeTimeout = 10 * time.Second

// answerACMEChallenge answers an HTTP-01 challenge of one of tollgate's
// own ACME listeners on a plain listener, before routing and before
// redirect_https. It reports whether it answered; other requests, and
// challenges tollgate did not start, go on as before (to the routes).
func (ss *session) answerACMEChallenge(st *requestState) bool {
	req := &ss.req
	managers := ss.s.acme.managers
	if len(managers) == 0 || ss.proto != "http" || req.Method != http.MethodGet ||
		!strings.HasPrefix(st.path, acmeChallengePrefix) {
		return false
	}
	ctx, cancel := context.WithTimeout(ss.s.acme.ctx, challengeTimeout)
	defer cancel()
	r := (&http.Request{
		Method:     req.Method,
		URL:        &url.URL{Path: st.path},
		RequestURI: req.Target,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: req.Minor,
		Host:       req.Host,
		Header:     http.Header{"User-Agent": {req.Header.Get("User-Agent")}},
		RemoteAddr: ss.conn.RemoteAddr().String(),
	}).WithContext(ctx)
	var w challengeWriter
	for _, m := range managers {
		for _, iss := range m.issuers {
			if iss.HandleHTTPChallenge(&w, r) {
				ss.writeChallengeAnswer(st, &w)
				return true
			}
		}
	}
	return false
}

// writeChallengeAnswer sends what certmagic wrote to the challengeWriter
// through tollgate's own response path, so the answer is framed, timed
// (send_timeout) and logged like every other.
func (ss *session) writeChallengeAnswer(st *requestState, w *challengeWriter) {
	st.status = w.statusCode()
	var fieldsA [4]h1.Field
	fields := fieldsA[:0]
	for name, values := range w.header {
		for _, v := range values {
			fields = append(fields, h1.Field{Name: name, Value: v})
		}
	}
	fields = append(fields, h1.Field{Name: "Cache-Control", Value: "no-store"})
	ss.rw.writeHead(&headSpec{status: st.status, reason: statusText(st.status),
		contentLength: int64(w.body.Len()), extra: fields})
	ss.rw.Write(w.body.Bytes())
	ss.rw.finish(nil)
}

// challengeWriter is the http.ResponseWriter certmagic's challenge
// handler writes to. It only collects: the answer is a few dozen bytes,
// and writing it through the session keeps one response path.
type challengeWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *challengeWriter) Header() http.Header {
	if w.header == nil {
		w.header = http.Header{}
	}
	return w.header
}

func (w *challengeWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *challengeWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

func (w *challengeWriter) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
