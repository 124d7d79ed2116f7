// Command sextant is the Sextant command line. `sextant dev` runs the whole
// control plane in one process for development: an embedded etcd and every
// service on its default address, talking to each other over loopback
// (package devplane). The demo is not part of this binary: `make demo` runs
// its own command, examples/demo/cmd/demo-dev.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sextant-mesh/sextant/cmd/sextant/ctl"
	"github.com/sextant-mesh/sextant/cmd/sextant/devplane"
)

// usage lists the commands; the operators' ones come from package ctl.
func usage() string {
	var b strings.Builder
	b.WriteString(`usage: sextant <command> [flags]

commands:
  dev           run an embedded etcd and every Sextant service in one process (Ctrl-C stops)
  token         create, list and revoke tokens (sextant token create --service S)
  access        inspect a service's callers against its access rules (sextant access inspect --service S)
`)
	for _, c := range ctl.Commands {
		fmt.Fprintf(&b, "  %-13s %s\n", c.Name, c.Summary)
	}
	b.WriteString(`
Run "sextant <command> -h" for the flags of a command. Commands that talk to
the control plane take --config-center, --token and --context, else
$SEXTANT_CONFIG_CENTER and $SEXTANT_ADMIN_TOKEN, else the current context of
the context file (docs/cli.md).
`)
	return b.String()
}

// errDemo answers `sextant dev --demo`, which ran the demo before it became a
// command of its own.
var errDemo = errors.New("the demo is not part of the sextant binary: run `make demo` " +
	"(go run ./examples/demo/cmd/demo-dev, which takes the flags of sextant dev and --demo-addr)")

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage())
		os.Exit(2)
	}
	switch os.Args[1] {
	case "dev":
		if err := dev(os.Args[2:]); err != nil && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sextant dev:", err)
			os.Exit(1)
		}
	case "token":
		if err := token(os.Args[2:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sextant token:", err)
			os.Exit(1)
		}
	case "access":
		if err := access(os.Args[2:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sextant access:", err)
			os.Exit(1)
		}
	case "-h", "-help", "--help", "help":
		fmt.Print(usage())
	default:
		known, err := ctl.Run(os.Args[1], os.Args[2:], os.Stdout, os.Stderr)
		if !known {
			fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", os.Args[1], usage())
			os.Exit(2)
		}
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "sextant %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
	}
}

func dev(args []string) error {
	var demo bool
	cfg, err := devplane.Parse("sextant dev", args, os.Stderr, func(fs *flag.FlagSet) {
		fs.BoolVar(&demo, "demo", false, "the demo is a command of its own: prints how to run it (make demo)")
	})
	if err != nil {
		return err
	}
	if demo {
		return errDemo
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cfg.Run(ctx)
}
