package center

import "github.com/sextant-mesh/sextant/services/config-center/console"

// consoleKinds are the kinds the web console edits: every kind the API serves.
func consoleKinds() []console.Kind {
	out := make([]console.Kind, 0, len(Kinds))
	for name, k := range Kinds {
		scope := "server"
		if k.Scope == ClientScope {
			scope = "client"
		}
		out = append(out, console.Kind{Name: name, Scope: scope})
	}
	return out
}
