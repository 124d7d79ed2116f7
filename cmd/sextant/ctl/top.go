package ctl

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"time"

	"github.com/sextant-mesh/sextant/api"
)

// topCmd is `sextant top`: the services sorted by trouble (or one
// service's instances), redrawn every interval until interrupted.
func topCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sextant top", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf connFlags
	cf.register(fs, false)
	service := fs.String("service", "", "show this service's instances instead of the services")
	interval := fs.Duration("interval", time.Second, "how often to redraw")
	limit := fs.Int("limit", 30, "services shown")
	iterations := fs.Int("n", 0, "stop after this many screens (0: until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *interval < 100*time.Millisecond {
		return fmt.Errorf("--interval %s: at least 100ms", *interval)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for i := 0; *iterations == 0 || i < *iterations; i++ {
		var screen bytes.Buffer
		// Home and clear, then the whole screen in one write: no flicker.
		screen.WriteString("\x1b[H\x1b[2J")
		fmt.Fprintf(&screen, "sextant top - %s - every %s (Ctrl-C quits)\n\n", time.Now().Format(time.TimeOnly), *interval)
		if *service == "" {
			l, err := fetchServices(c, "", "trouble", 0, *limit)
			if err != nil {
				fmt.Fprintf(&screen, "error: %v\n", err)
			} else {
				printServices(&screen, l)
			}
		} else {
			var s api.ServiceInstances
			if _, err := c.Do(http.MethodGet, "/v1/services/"+url.PathEscape(*service), nil, &s); err != nil {
				fmt.Fprintf(&screen, "error: %v\n", err)
			} else {
				printDescription(&screen, description{Service: s})
			}
		}
		if _, err := stdout.Write(screen.Bytes()); err != nil {
			return err
		}
		if *iterations != 0 && i+1 == *iterations {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	return nil
}
