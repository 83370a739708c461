package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
)

// The config file is one JSON object whose keys are flag names without the
// dashes and whose values are strings, numbers or booleans:
//
//	{"server": "nats://n1:4222,nats://n2:4222", "replicas": 3, "log-format": "json"}
//
// Precedence, highest first: command-line flags, environment variables (an
// empty one counts as unset), the config file, built-in defaults.

// envOfFlag finds the environment variable a flag's usage names.
var envOfFlag = regexp.MustCompile(`\(env ([A-Z0-9_]+)\)`)

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

// applyConfigFile sets every flag named in the file whose environment
// variable is not set; flags parsed afterwards override it again.
func applyConfigFile(fs *flag.FlagSet, path string) error {
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
		f := fs.Lookup(name)
		if f == nil || name == "config" || name == "print-config" || name == "version" {
			return fmt.Errorf("config file %s: unknown setting %q", path, name)
		}
		if m := envOfFlag.FindStringSubmatch(f.Usage); m != nil {
			if os.Getenv(m[1]) != "" {
				continue // the environment wins over the file
			}
		}
		v := values[name]
		s, ok := v.(string)
		if !ok {
			s = strings.TrimSpace(fmt.Sprint(v))
		}
		if err := fs.Set(name, s); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, name, err)
		}
	}
	return nil
}

// printConfig writes the effective settings as a config file would hold
// them, with passwords in URLs masked.
func printConfig(w io.Writer, fs *flag.FlagSet) error {
	out := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		switch {
		case f.Name == "config" || f.Name == "print-config" || f.Name == "version" || isAlias(f):
			return
		case (f.Name == "password" || f.Name == "token") && f.Value.String() != "":
			out[f.Name] = "xxxxx"
			return
		}
		out[f.Name] = maskURLs(f.Value.String())
	})
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
