//go:build race

package main

// raceEnabled reports whether the tests run with the race detector; the
// binary test builds the server the same way, so that every dependency
// comes from the build cache that compiling the tests just filled.
const raceEnabled = true
