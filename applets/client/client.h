#ifndef OPENSHELL_CLIENT_H
#define OPENSHELL_CLIENT_H
/*
 * Private to the client applet: one function per top-level command. Each gets
 * argv with argv[0] set to the command name and returns the exit status.
 * Status 0 success, 1 failure, 2 usage error, 69 not available in this build.
 */
int cli_version(int argc, char **argv);
int cli_run(int argc, char **argv);
int cli_policy(int argc, char **argv);
int cli_gateway(int argc, char **argv);
int cli_sandbox(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_completion(int argc, char **argv);
/* provider ... and inference ... (provider.c, inference.c). */
int cli_provider(int argc, char **argv);
int cli_inference(int argc, char **argv);
/* sandbox create's inferred provider: ARGV[0] (the trailing command)
 * names a provider type (claude, codex, gh, glab); one of that type is
 * added to NAMES (a JSON array of names), created from the environment when
 * none exists. MODE: 1 create without asking, -1 never, 0 ask on a
 * terminal (an error otherwise). 0 or CLI_EXIT_* after printing why. */
struct cli_ctx;
struct cJSON;
int cli_provider_infer(struct cli_ctx *c, char **argv, int argc, int mode, struct cJSON *names);
/* sandbox provider list|attach|detach (argv[0] is "provider"). */
int cli_sandbox_provider(int argc, char **argv);
/* policy set|get|list|update (argv[0] is the subcommand): the exit status,
 * or -1 when argv[0] is none of them. */
int cli_policy_gw(int argc, char **argv);
/* sandbox logs|exec|connect|upload|download (argv[0] is the subcommand):
 * the exit status, or -1 when argv[0] is none of them. */
int cli_sandbox_io(int argc, char **argv);
/* "openshell logs": sandbox logs with the reference's top-level flags. */
int cli_logs(int argc, char **argv);

#endif
