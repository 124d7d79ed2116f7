// Command config-center serves the governance config API.
package main

import (
	"flag"
	"log/slog"
	"time"

	"github.com/sextant-mesh/sextant/internal/service"
	"github.com/sextant-mesh/sextant/services/config-center/center"
)

func main() {
	cfg := center.DefaultConfig()
	service.Main("config-center",
		func(fs *flag.FlagSet) { cfg.RegisterFlags(fs) },
		func(log *slog.Logger) (service.Service, error) { return center.New(cfg, log) },
		30*time.Second)
}
