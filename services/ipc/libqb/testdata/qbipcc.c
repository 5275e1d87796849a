/*
 * qbipcc: a client of libqb's own (qb_ipcc_*, libqb-dev) against the Go
 * server, whatever transport the server chooses.
 *
 * usage: qbipcc SERVICE check     round trips of growing sizes, 200 events
 *                                 read as a poll loop reads them, the peer
 *                                 of qb_ipcc_fd_get's descriptor; prints
 *                                 "OK", then "peer PID UID GID"
 *        qbipcc SERVICE hold      one round trip, prints "ready", then waits
 *                                 to be killed
 *        qbipcc SERVICE bench N   N round trips of 64 bytes, as a
 *                                 synchronous corosync client makes them
 */
#define _GNU_SOURCE
#include <qb/qbipcc.h>
#include <qb/qbipc_common.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char req[8192], resp[16384], ev[8192];

static int round_trip(qb_ipcc_connection_t *c, int id, int body)
{
	struct qb_ipc_request_header *h = (void *)req;
	h->id = id;
	h->size = sizeof(*h) + body;
	for (int i = 0; i < body; i++)
		req[sizeof(*h) + i] = (char)(id + i);
	struct iovec iov = {req, h->size};
	ssize_t n = qb_ipcc_sendv_recv(c, &iov, 1, resp, sizeof(resp), 5000);
	/* The echo server answers a response header and the whole request. */
	if (n != (ssize_t)(sizeof(struct qb_ipc_response_header) + h->size) ||
	    memcmp(resp + sizeof(struct qb_ipc_response_header), req, h->size) != 0) {
		fprintf(stderr, "round trip id %d body %d: %zd\n", id, body, n);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3 && !(argc == 4 && strcmp(argv[2], "bench") == 0))
		return 2;
	qb_ipcc_connection_t *c = qb_ipcc_connect(argv[1], 8192);
	if (c == NULL) {
		printf("connect: %s\n", strerror(errno));
		return 1;
	}
	if (strcmp(argv[2], "bench") == 0) {
		long n = atol(argv[3]);
		for (long i = 0; i < n; i++)
			if (round_trip(c, 3, 64) != 0)
				return 1;
		qb_ipcc_disconnect(c);
		printf("OK\n");
		return 0;
	}
	if (strcmp(argv[2], "hold") == 0) {
		if (round_trip(c, 1, 10) != 0)
			return 1;
		printf("ready\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	for (int i = 0; i < 200; i++)
		if (round_trip(c, 2, (i * 37) % (8192 - 16)) != 0)
			return 1;
	/* Request 9 with body byte 2: the server sends 200 events of 2 KiB,
	 * numbered, before it answers. */
	struct qb_ipc_request_header *h = (void *)req;
	h->id = 9;
	h->size = sizeof(*h) + 1;
	req[sizeof(*h)] = 2;
	struct iovec iov = {req, h->size};
	if (qb_ipcc_sendv_recv(c, &iov, 1, resp, sizeof(resp), 5000) <= 0) {
		fprintf(stderr, "event request failed\n");
		return 1;
	}
	int fd;
	qb_ipcc_fd_get(c, &fd);
	for (int i = 0; i < 200; i++) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 5000) != 1) {
			fprintf(stderr, "event %d: no notification\n", i);
			return 1;
		}
		ssize_t n = qb_ipcc_event_recv(c, ev, sizeof(ev), 5000);
		uint32_t num;
		memcpy(&num, ev, 4);
		if (n != 2048 || num != (uint32_t)i) {
			fprintf(stderr, "event %d: %zd bytes, number %u\n", i, n, num);
			return 1;
		}
	}
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		perror("SO_PEERCRED");
		return 1;
	}
	qb_ipcc_disconnect(c);
	printf("OK\npeer %d %u %u\n", cred.pid, cred.uid, cred.gid);
	return 0;
}
