// Package version holds Hearth's version, set at build time by the Makefile.
package version

// Version is the release or git description of this build.
var Version = "dev"
