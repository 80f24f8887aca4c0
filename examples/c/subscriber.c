/*
 * subscriber: subscribes to TOPIC and prints COUNT messages, read in place.
 *
 *   cc -Wall -Wextra -std=c11 subscriber.c $(pkg-config --cflags --libs agentwire) -o subscriber
 *   ./subscriber /run/agentwire/agentwire.sock news 10
 */
#include <agentwire.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: subscriber SOCKET TOPIC COUNT\n");
        return 2;
    }
    int count = atoi(argv[3]);

    /* Subscribing at registration: the subscription holds once aw_connect returns. */
    aw_options *options;
    aw_agent *agent;
    if (aw_options_new("subscriber", &options) != AW_OK ||
        aw_options_set_socket(options, argv[1]) != AW_OK ||
        aw_options_add_topic(options, argv[2]) != AW_OK ||
        aw_connect(options, &agent) != AW_OK) {
        fprintf(stderr, "connect: %s\n", aw_last_error());
        return 1;
    }
    aw_options_free(options);
    printf("ready\n");
    fflush(stdout);

    for (int i = 0; i < count; i++) {
        aw_message msg;
        /* Waits up to 10 s. The view points into the shared rx ring: valid until the next
         * receive or aw_message_release. */
        aw_status status = aw_recv(agent, &msg, 10000);
        if (status != AW_OK) {
            fprintf(stderr, "recv: %s: %s\n", aw_status_name(status), aw_last_error());
            return 1;
        }
        printf("got %.*s\n", (int)msg.payload_len, (const char *)msg.payload);
    }
    aw_close(agent);
    return 0;
}
