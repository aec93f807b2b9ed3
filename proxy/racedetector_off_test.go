//go:build !race

package proxy

// raceDetector reports whether the tests run under -race.
const raceDetector = false
