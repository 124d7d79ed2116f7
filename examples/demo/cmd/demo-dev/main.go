// Command demo-dev runs the control plane of `sextant dev` (package devplane)
// and the demo beside it: five instances of a Kitex comment service (the
// fifth five times slower), a Hertz front and a load driver, printing every
// second each instance's weight and share of traffic and the admission
// threshold. `make demo` runs it. It takes the flags of `sextant dev`, and
// --demo-addr for the front.
//
// It is a command of its own so that the sextant binary does not link the
// demo.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sextant-mesh/sextant/cmd/sextant/devplane"
	"github.com/sextant-mesh/sextant/examples/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "demo-dev:", err)
		os.Exit(1)
	}
}

// run runs the control plane and the demo until ctx ends; the demo prints to
// stdout, the control plane logs to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var frontAddr string
	cfg, err := devplane.Parse("demo-dev", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&frontAddr, "demo-addr", "127.0.0.1:7705", "the demo's Hertz front address")
	})
	if err != nil {
		return err
	}
	cfg.Beside = func(ctx context.Context, a devplane.Addrs) error {
		tokens, err := demo.IssueTokens(ctx, a.ConfigCenter, a.AdminToken, demo.Service, demo.FrontService)
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		cp := demo.ControlPlane{MeshCore: a.MeshCore, Mixer: a.Mixer, Window: time.Second, Tokens: tokens}
		if err := demo.Run(ctx, cp, frontAddr, stdout, slog.New(slog.DiscardHandler)); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		return nil
	}
	return cfg.Run(ctx)
}
