/*
 * respond: offers the capability "echo" 1.0.0 and answers COUNT requests with
 * "echo: " + the request's payload.
 *
 *   cc -Wall -Wextra -std=c11 respond.c $(pkg-config --cflags --libs agentwire) -o respond
 *   ./respond /run/agentwire/agentwire.sock 10
 */
#include <agentwire.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: respond SOCKET COUNT\n");
        return 2;
    }
    int count = atoi(argv[2]);

    aw_options *options;
    aw_agent *agent;
    if (aw_options_new("responder", &options) != AW_OK ||
        aw_options_set_socket(options, argv[1]) != AW_OK ||
        aw_options_add_capability(options, "echo", "1.0.0") != AW_OK ||
        aw_connect(options, &agent) != AW_OK) {
        fprintf(stderr, "connect: %s\n", aw_last_error());
        return 1;
    }
    aw_options_free(options);
    printf("ready\n");
    fflush(stdout);

    for (int answered = 0; answered < count;) {
        aw_message req;
        aw_status status = aw_recv(agent, &req, 10000);
        if (status != AW_OK) {
            fprintf(stderr, "recv: %s: %s\n", aw_status_name(status), aw_last_error());
            return 1;
        }
        if (req.kind != AW_KIND_REQUEST) continue;
        /* Answer from the request's view: its source and correlation id. */
        char reply[128] = "echo: ";
        size_t len = req.payload_len < 100 ? req.payload_len : 100;
        memcpy(reply + 6, req.payload, len);
        if (aw_respond(agent, &req, reply, 6 + len) != AW_OK) {
            fprintf(stderr, "respond: %s\n", aw_last_error());
            return 1;
        }
        answered++;
    }
    printf("answered %d\n", count);
    aw_close(agent);
    return 0;
}
