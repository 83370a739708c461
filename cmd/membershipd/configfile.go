package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/choria-io/fisk"
)

// The config file is one JSON object whose keys are flag names without the
// dashes and whose values are strings, numbers or booleans:
//
//	{"server": "nats://n1:4222,nats://n2:4222", "replicas": 3, "log-format": "json"}
//
// Precedence, highest first: command-line flags, environment variables (an
// empty one counts as unset), the config file, built-in defaults.

// configFileArg finds --config in args (or MEMBERSHIPD_CONFIG) before the
// flags are parsed, so that the file can sit below flags and environment.
func configFileArg(args []string) string {
	path := os.Getenv("MEMBERSHIPD_CONFIG")
	for i, a := range args {
		switch {
		case a == "--":
			return path
		case a == "--config" || a == "-config":
			if i+1 < len(args) {
				path = args[i+1]
			}
		case strings.HasPrefix(a, "--config=") || strings.HasPrefix(a, "-config="):
			path = a[strings.Index(a, "=")+1:]
		}
	}
	return path
}

// notInFile are flags a config file cannot set.
var notInFile = map[string]bool{"config": true, "print-config": true, "version": true, "help": true, "nats-url": true}

// applyConfigFile makes every setting in the file the default of its flag:
// the environment and the command line still win over it. Each value is
// checked at once, so that an error names the file and the setting.
func applyConfigFile(app *fisk.Application, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	var values map[string]any
	if err := json.Unmarshal(data, &values); err != nil {
		return fmt.Errorf("config file %s: not a JSON object of flag names: %w", path, err)
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, name := range keys {
		f := app.GetFlag(name)
		if f == nil || notInFile[name] || f.Model().Hidden {
			return fmt.Errorf("config file %s: unknown setting %q", path, name)
		}
		v := values[name]
		s, ok := v.(string)
		if !ok {
			s = strings.TrimSpace(fmt.Sprint(v))
		}
		if err := f.Model().Value.Set(s); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, name, err)
		}
		f.Default(s)
	}
	return nil
}

// printConfig writes the effective settings as a config file would hold
// them, with passwords in URLs masked.
func printConfig(w io.Writer, app *fisk.Application) error {
	out := map[string]string{}
	for _, f := range app.Model().Flags {
		switch {
		case f.Hidden || notInFile[f.Name]:
			continue
		case (f.Name == "password" || f.Name == "token") && f.Value.String() != "":
			out[f.Name] = "xxxxx"
			continue
		}
		out[f.Name] = maskURLs(f.Value.String())
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// maskURLs hides the password of every URL in a comma-separated list.
func maskURLs(v string) string {
	if !strings.Contains(v, "@") {
		return v
	}
	parts := strings.Split(v, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			} else {
				u.User = url.User("xxxxx")
			}
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
