/*
 * cli_misc.c: "openshell completion bash|zsh|fish".
 */
#include <stdio.h>
#include <string.h>

#include "../applets.h"
#include "client.h"

int
cli_completion(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return applet_not_built("openshell completion", "shell completion");
}
