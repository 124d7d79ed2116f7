// Package settings loads a service's settings from flags and environment
// variables. Each service keeps its settings in one struct whose defaults and
// descriptions are its flags; every flag can also be set by an environment
// variable SEXTANT_<FLAG_NAME> (dashes become underscores), and a flag given on
// the command line wins over the environment.
package settings

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// EnvName is the environment variable that sets flag name.
func EnvName(name string) string {
	return "SEXTANT_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// Parse parses args, then fills every flag not given from the environment.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", EnvName(f.Name), v, e)
			}
		}
	})
	return err
}

// Log prints every setting once at start, so that what a service runs with is
// in its log; tokens and passwords are redacted.
func Log(log *slog.Logger, fs *flag.FlagSet) {
	var attrs []any
	fs.VisitAll(func(f *flag.Flag) {
		if strings.Contains(f.Name, "token") || strings.Contains(f.Name, "password") {
			attrs = append(attrs, f.Name, "<redacted>")
			return
		}
		attrs = append(attrs, f.Name, f.Value.String())
	})
	log.Info("settings", attrs...)
}
