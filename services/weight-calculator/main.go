// Command weight-calculator runs one weight-calculator shard.
package main

import (
	"flag"
	"log/slog"
	"time"

	"github.com/sextant-mesh/sextant/internal/service"
	"github.com/sextant-mesh/sextant/services/weight-calculator/calculator"
)

func main() {
	cfg := calculator.DefaultConfig()
	service.Main("weight-calculator",
		func(fs *flag.FlagSet) { cfg.RegisterFlags(fs) },
		func(log *slog.Logger) (service.Service, error) { return calculator.New(cfg, log) },
		20*time.Second)
}
