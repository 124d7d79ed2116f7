// Command mesh-core serves the instance registry, the policy store and
// discovery to data planes.
package main

import (
	"flag"
	"log/slog"
	"time"

	"github.com/sextant-mesh/sextant/internal/service"
	"github.com/sextant-mesh/sextant/services/mesh-core/core"
)

func main() {
	cfg := core.DefaultConfig()
	service.Main("mesh-core",
		func(fs *flag.FlagSet) { cfg.RegisterFlags(fs) },
		func(log *slog.Logger) (service.Service, error) { return core.New(cfg, log) },
		30*time.Second)
}
