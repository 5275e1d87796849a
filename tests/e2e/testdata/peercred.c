/*
 * peercred: what Pacemaker checks of its corosync provider. For each
 * service named, connect with corosync's own client library, take the
 * descriptor it hands out for polling (cmap_fd_get, cpg_fd_get,
 * quorum_fd_get, corosync_cfg_fd_get) and ask the kernel who is on the
 * other end (SO_PEERCRED).
 *
 * usage: peercred SERVICE...     (cmap cpg quorum cfg)
 * prints one line per service: "SERVICE pid P uid U gid G", or
 * "SERVICE error E" (the cs_error_t of the initialize call).
 */
#define _GNU_SOURCE
#include <corosync/cfg.h>
#include <corosync/cmap.h>
#include <corosync/cpg.h>
#include <corosync/quorum.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static void report(const char *service, cs_error_t err, int fd)
{
	if (err != CS_OK) {
		printf("%s error %d\n", service, err);
		return;
	}
	struct ucred cred;
	socklen_t len = sizeof(cred);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		printf("%s error getsockopt\n", service);
		return;
	}
	printf("%s pid %d uid %u gid %u\n", service, cred.pid, cred.uid, cred.gid);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *s = argv[i];
		cs_error_t err = CS_ERR_NOT_EXIST;
		int fd = -1;
		if (strcmp(s, "cmap") == 0) {
			cmap_handle_t h;
			if ((err = cmap_initialize(&h)) == CS_OK)
				err = cmap_fd_get(h, &fd);
		} else if (strcmp(s, "cpg") == 0) {
			cpg_handle_t h;
			cpg_callbacks_t cb;
			memset(&cb, 0, sizeof(cb));
			if ((err = cpg_initialize(&h, &cb)) == CS_OK)
				err = cpg_fd_get(h, &fd);
		} else if (strcmp(s, "quorum") == 0) {
			quorum_handle_t h;
			quorum_callbacks_t cb;
			uint32_t type;
			memset(&cb, 0, sizeof(cb));
			if ((err = quorum_initialize(&h, &cb, &type)) == CS_OK)
				err = quorum_fd_get(h, &fd);
		} else if (strcmp(s, "cfg") == 0) {
			corosync_cfg_handle_t h;
			corosync_cfg_callbacks_t cb;
			memset(&cb, 0, sizeof(cb));
			if ((err = corosync_cfg_initialize(&h, &cb)) == CS_OK)
				err = corosync_cfg_fd_get(h, &fd);
		}
		report(s, err, fd);
	}
	return 0;
}
