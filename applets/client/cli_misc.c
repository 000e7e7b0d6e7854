/*
 * cli_misc.c: "openshell completion bash|zsh|fish": a completion script
 * for the shell. Command and option names are static; sandbox and gateway
 * names are asked at completion time (sandbox list --names, gateway list
 * --names), quietly, so a missing gateway never breaks the shell.
 */
#include <stdio.h>
#include <string.h>

#include "../applets.h"
#include "client.h"

static const char completion_usage[] =
    "Usage: openshell completion bash|zsh|fish\n"
    "\n"
    "Print a completion script for the shell. Commands, subcommands, options,\n"
    "gateway names and sandbox names complete.\n"
    "\n"
    "Examples:\n"
    "  source <(openshell completion bash)          # bash, this shell\n"
    "  openshell completion zsh > \"${fpath[1]}/_openshell\"\n"
    "  openshell completion fish > ~/.config/fish/completions/openshell.fish\n";

static const char bash_script[] =
    "# openshell bash completion\n"
    "_openshell() {\n"
    "    local cur=${COMP_WORDS[COMP_CWORD]} cmd=${COMP_WORDS[1]} sub=${COMP_WORDS[2]}\n"
    "    local words\n"
    "    if [ \"$COMP_CWORD\" -eq 1 ]; then\n"
    "        words='completion gateway inference logs policy provider run sandbox status version "
    "applet'\n"
    "    elif [ \"$COMP_CWORD\" -eq 2 ]; then\n"
    "        case $cmd in\n"
    "        gateway|gw) words='start stop status add select list remove info' ;;\n"
    "        sandbox|sb) words='create list get delete exec connect upload download logs' ;;\n"
    "        policy|pol) words='validate check default set get list update' ;;\n"
    "        logs) words=$(openshell sandbox list --names 2>/dev/null) ;;\n"
    "        completion) words='bash zsh fish' ;;\n"
    "        esac\n"
    "    else\n"
    "        case $cur in\n"
    "        -*) case $cmd in\n"
    "            sandbox|sb) words='--name --label --env --policy --tty --no-tty --timeout "
    "--detach --no-keep --from --limit --offset --selector --names --ids --all --follow --tail "
    "--level --source --since --workdir --interactive --gateway --output --workspace --help' ;;\n"
    "            policy|pol) words='--policy --wait --timeout --global --yes --rev --full "
    "--limit --add-endpoint --remove-endpoint --add-allow --add-deny --remove-rule --binary "
    "--rule-name --dry-run --gateway --output --help' ;;\n"
    "            gateway|gw) words='--name --state-dir --listen --names --gateway --output "
    "--help' ;;\n"
    "            esac ;;\n"
    "        *) case $cmd/$sub in\n"
    "            sandbox/get|sandbox/delete|sb/get|sb/delete|sandbox/exec|sandbox/connect|"
    "sandbox/upload|sandbox/download|sandbox/logs|sb/exec|sb/connect|sb/upload|sb/download|"
    "sb/logs|policy/set|policy/get|policy/list|policy/update)\n"
    "                [ \"$COMP_CWORD\" -eq 3 ] && words=$(openshell sandbox list --names "
    "2>/dev/null) || { COMPREPLY=($(compgen -f -- \"$cur\")); return; } ;;\n"
    "            gateway/select|gateway/remove|gateway/stop|gateway/info|gateway/status|gw/*)\n"
    "                words=$(openshell gateway list --names 2>/dev/null) ;;\n"
    "            *) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n"
    "            esac ;;\n"
    "        esac\n"
    "    fi\n"
    "    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
    "}\n"
    "complete -F _openshell openshell\n";

static const char zsh_script[] =
    "#compdef openshell\n"
    "# openshell zsh completion\n"
    "_openshell() {\n"
    "    local -a cands\n"
    "    case $CURRENT in\n"
    "    2) cands=(completion gateway inference logs policy provider run sandbox status "
    "version applet) ;;\n"
    "    3) case ${${(z)BUFFER}[2]} in\n"
    "       gateway|gw) cands=(start stop status add select list remove info) ;;\n"
    "       sandbox|sb) cands=(create list get delete exec connect upload download logs) ;;\n"
    "       policy|pol) cands=(validate check default set get list update) ;;\n"
    "       logs) cands=(${(f)\"$(openshell sandbox list --names 2>/dev/null)\"}) ;;\n"
    "       completion) cands=(bash zsh fish) ;;\n"
    "       esac ;;\n"
    "    *) case ${${(z)BUFFER}[2]}/${${(z)BUFFER}[3]} in\n"
    "       sandbox/get|sandbox/delete|sb/get|sb/delete|sandbox/exec|sandbox/connect|"
    "sandbox/logs|sb/exec|sb/connect|sb/logs|policy/set|policy/get|policy/list|policy/update)\n"
    "           cands=(${(f)\"$(openshell sandbox list --names 2>/dev/null)\"}) ;;\n"
    "       gateway/*|gw/*) cands=(${(f)\"$(openshell gateway list --names 2>/dev/null)\"}) ;;\n"
    "       *) _files; return ;;\n"
    "       esac ;;\n"
    "    esac\n"
    "    compadd -a cands\n"
    "}\n"
    "compdef _openshell openshell\n";

static const char fish_script[] =
    "# openshell fish completion\n"
    "complete -c openshell -f\n"
    "complete -c openshell -n __fish_use_subcommand -a 'completion gateway inference logs "
    "policy provider run sandbox status version applet'\n"
    "complete -c openshell -n '__fish_seen_subcommand_from gateway gw; and not "
    "__fish_seen_subcommand_from start stop status add select list remove info' -a 'start "
    "stop status add select list remove info'\n"
    "complete -c openshell -n '__fish_seen_subcommand_from sandbox sb; and not "
    "__fish_seen_subcommand_from create list get delete exec connect upload download logs' "
    "-a 'create list get delete exec connect upload download logs'\n"
    "complete -c openshell -n '__fish_seen_subcommand_from policy pol; and not "
    "__fish_seen_subcommand_from validate check default set get list update' -a 'validate "
    "check default set get list update'\n"
    "complete -c openshell -n '__fish_seen_subcommand_from completion' -a 'bash zsh fish'\n"
    "complete -c openshell -n '__fish_seen_subcommand_from get delete exec connect upload "
    "download logs set list update' -a '(openshell sandbox list --names 2>/dev/null)'\n"
    "complete -c openshell -n '__fish_seen_subcommand_from select remove stop info' -a "
    "'(openshell gateway list --names 2>/dev/null)'\n"
    "complete -c openshell -s g -l gateway -r -a '(openshell gateway list --names "
    "2>/dev/null)'\n"
    "complete -c openshell -s o -l output -r -a 'table json yaml'\n"
    "complete -c openshell -l policy -r -F\n";

int
cli_completion(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        fputs(completion_usage, stdout);
        return 0;
    }
    if (argc != 2)
        applet_usage_error("openshell completion", "expected one shell: bash, zsh or fish");
    if (!strcmp(argv[1], "bash"))
        fputs(bash_script, stdout);
    else if (!strcmp(argv[1], "zsh"))
        fputs(zsh_script, stdout);
    else if (!strcmp(argv[1], "fish"))
        fputs(fish_script, stdout);
    else
        applet_usage_error("openshell completion", "unknown shell '%s' (bash, zsh or fish)",
                           argv[1]);
    return 0;
}
