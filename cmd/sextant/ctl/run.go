package ctl

import (
	"fmt"
	"io"
)

// Commands are the operators' commands this package runs, with a line
// each for the sextant command's usage.
var Commands = []struct{ Name, Summary string }{
	{"config", "read, write, edit, diff, roll out, roll back and pin governance config"},
	{"services", "the services, sorted by trouble: instances, ejections, traffic, overload"},
	{"describe", "one service: instances with weights and why, overload, configs, data planes"},
	{"status", "the data planes, and whether each holds the current discovery and runs the current configs"},
	{"proxy-status", "the xDS data planes (gRPC clients, Envoys) on a mesh-core replica: SYNCED, STALE or NOT SENT per type"},
	{"top", "a live view of the services (or one service's instances), redrawn every second"},
	{"export", "every governance config as files (DIR/KIND/SCOPE.json)"},
	{"import", "write the configs of an exported directory (checked first, unchanged ones skipped)"},
	{"context", "named control planes and credentials (~/.config/sextant/config)"},
	{"completion", "shell completion: sextant completion bash|zsh"},
}

// Run runs one of Commands; ok is false for a name it does not know.
func Run(name string, args []string, stdout, stderr io.Writer) (ok bool, err error) {
	run := map[string]func([]string, io.Writer, io.Writer) error{
		"config": configCmd, "services": servicesCmd, "describe": describeCmd, "status": statusCmd, "proxy-status": proxyStatusCmd,
		"top": topCmd, "export": exportCmd, "import": importCmd, "context": contextCmd, "completion": completionCmd,
	}[name]
	if run == nil {
		return false, nil
	}
	return true, run(args, stdout, stderr)
}

func completionCmd(args []string, stdout, _ io.Writer) error {
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		return fmt.Errorf("usage: sextant completion bash|zsh")
	}
	script := bashCompletion
	if args[0] == "zsh" {
		script = "autoload -U +X bashcompinit && bashcompinit\n" + bashCompletion
	}
	_, err := fmt.Fprint(stdout, script)
	return err
}

// The completion completes commands, config subcommands and kinds.
const bashCompletion = `# sextant completion; source it: source <(sextant completion bash)
_sextant() {
  local cur prev words
  cur="${COMP_WORDS[COMP_CWORD]}"
  prev="${COMP_WORDS[COMP_CWORD-1]}"
  case "$COMP_CWORD" in
    1) COMPREPLY=($(compgen -W "dev token access config services describe status proxy-status top export import context completion" -- "$cur")); return ;;
  esac
  case "${COMP_WORDS[1]}" in
    config)
      if [ "$COMP_CWORD" -eq 2 ]; then
        COMPREPLY=($(compgen -W "list get put edit diff delete history rollback rollout promote abort status pin unpin pins" -- "$cur"))
      elif [ "$COMP_CWORD" -eq 3 ]; then
        COMPREPLY=($(compgen -W "rpc_timeout retry circuit_break degradation limit access_control unit_routing overload priority_rules calculator" -- "$cur"))
      fi ;;
    describe) [ "$COMP_CWORD" -eq 2 ] && COMPREPLY=($(compgen -W "service" -- "$cur")) ;;
    context) [ "$COMP_CWORD" -eq 2 ] && COMPREPLY=($(compgen -W "set use list current" -- "$cur")) ;;
    completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
    token) [ "$COMP_CWORD" -eq 2 ] && COMPREPLY=($(compgen -W "create list revoke" -- "$cur")) ;;
    export|import) COMPREPLY=($(compgen -d -- "$cur")) ;;
  esac
  case "$prev" in -f) COMPREPLY=($(compgen -f -- "$cur")) ;; -o) COMPREPLY=($(compgen -W "table json yaml" -- "$cur")) ;; esac
}
complete -F _sextant sextant
`
