package proxy

import (
	"net/http"
	"sync/atomic"
	"time"
)

// cachedDate is the Date field value, formatted once per second rather than
// once per response.
type cachedDate struct {
	unix int64
	text string
}

var dateCache atomic.Pointer[cachedDate]

// httpDate returns the current time in IMF-fixdate (RFC 9110 §5.6.7).
func httpDate() string {
	now := time.Now()
	if d := dateCache.Load(); d != nil && d.unix == now.Unix() {
		return d.text
	}
	d := &cachedDate{unix: now.Unix(), text: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.text
}
