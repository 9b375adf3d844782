// Package app is the composition of billkit's sample server (the command
// in the parent directory): its configuration from the environment, the
// [App] that builds every billkit component and serves the routes, and
// [Run], the whole program. It is importable so that the examples in other
// modules of this repository, such as the OpenTelemetry module's, run the
// very same server with their additions ([Config.Routes], for instance a
// /metrics endpoint).
//
// It is example code, not a stable API: it changes with the sample server.
package app
