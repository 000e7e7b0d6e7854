/* sandbox.c: "openshell sandbox ..." (being written). */
#include "../applets.h"
#include "client.h"

int
cli_sandbox(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return applet_not_built("openshell sandbox", "sandbox commands");
}
