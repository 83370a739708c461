// Package buildinfo names the build a binary runs: its module version and
// VCS revision, as recorded by the Go toolchain.
package buildinfo

import "runtime/debug"

// Version is the main module's version with its VCS revision when the
// build recorded one, e.g. "v1.2.0", "(devel) 0123456789ab+dirty".
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		switch {
		case s.Key == "vcs.revision":
			v += " " + s.Value[:min(12, len(s.Value))]
		case s.Key == "vcs.modified" && s.Value == "true":
			v += "+dirty"
		}
	}
	return v
}
