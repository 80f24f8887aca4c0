/*
 * publisher: publishes COUNT messages to TOPIC.
 *
 *   cc -Wall -Wextra -std=c11 publisher.c $(pkg-config --cflags --libs agentwire) -o publisher
 *   ./publisher /run/agentwire/agentwire.sock news 10
 */
#include <agentwire.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: publisher SOCKET TOPIC COUNT\n");
        return 2;
    }
    int count = atoi(argv[3]);

    /* Options are a builder: name, socket, then connect. */
    aw_options *options;
    aw_agent *agent;
    if (aw_options_new("publisher", &options) != AW_OK ||
        aw_options_set_socket(options, argv[1]) != AW_OK ||
        aw_connect(options, &agent) != AW_OK) {
        fprintf(stderr, "connect: %s\n", aw_last_error());
        return 1;
    }
    aw_options_free(options);

    for (int i = 0; i < count; i++) {
        char text[32];
        int len = snprintf(text, sizeof text, "message %d", i);
        /* The payload is copied into the shared tx ring; the daemon fans it out. */
        aw_status status = aw_publish(agent, argv[2], text, (size_t)len);
        if (status != AW_OK) {
            fprintf(stderr, "publish: %s: %s\n", aw_status_name(status), aw_last_error());
            return 1;
        }
    }
    printf("published %d\n", count);
    aw_close(agent);
    return 0;
}
