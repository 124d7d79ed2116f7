// Command telemetry-mixer takes telemetry from data planes and forwards it to
// the weight-calculator shards.
package main

import (
	"flag"
	"log/slog"
	"time"

	"github.com/sextant-mesh/sextant/internal/service"
	"github.com/sextant-mesh/sextant/services/telemetry-mixer/mixer"
)

func main() {
	cfg := mixer.DefaultConfig()
	service.Main("telemetry-mixer",
		func(fs *flag.FlagSet) { cfg.RegisterFlags(fs) },
		func(log *slog.Logger) (service.Service, error) { return mixer.New(cfg, log) },
		30*time.Second)
}
