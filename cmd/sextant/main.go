// Command sextant is the Sextant command line. `sextant dev` runs the whole
// control plane in one process for development: an embedded etcd and every
// service on its default address, talking to each other over loopback.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

const usage = `usage: sextant <command> [flags]

commands:
  dev    run an embedded etcd and every Sextant service in one process (Ctrl-C stops)

Run "sextant <command> -h" for the flags of a command.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "dev":
		if err := dev(os.Args[2:]); err != nil && !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "sextant dev:", err)
			os.Exit(1)
		}
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}
