/*
 * rbpeer: the other side of a qbrb ring, through libqb's own qb_rb_* API
 * (libqb-dev), for the Go tests to check byte compatibility.
 *
 * usage: rbpeer create NAME MAXMSG   qb_rb_open(QB_RB_FLAG_CREATE | QB_RB_FLAG_SHARED_PROCESS)
 *        rbpeer open NAME MAXMSG     qb_rb_open(QB_RB_FLAG_SHARED_PROCESS)
 * then one command a line on stdin, one answer a line on stdout:
 *        write HEX        qb_rb_chunk_write        -> "wrote N" | "err -E"
 *        read MS          qb_rb_chunk_read(MS)     -> "read HEX" | "err -E"
 *        refcount         qb_rb_refcount_get       -> "refcount N"
 *        userdata         the int32 of user data   -> "userdata N"
 *        close            qb_rb_close, exit
 */
#include <qb/qbrb.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char line[1 << 22];
static unsigned char buf[1 << 21];

static int unhex(const char *s, unsigned char *out)
{
	int n = 0;
	while (s[0] && s[1] && s[0] != '\n') {
		unsigned v;
		sscanf(s, "%2x", &v);
		out[n++] = v;
		s += 2;
	}
	return n;
}

int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	uint32_t flags = QB_RB_FLAG_SHARED_PROCESS;
	if (strcmp(argv[1], "create") == 0)
		flags |= QB_RB_FLAG_CREATE;
	qb_ringbuffer_t *rb = qb_rb_open(argv[2], atoi(argv[3]), flags, sizeof(int32_t));
	if (rb == NULL) {
		printf("err -%d\n", errno);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		if (strncmp(line, "write ", 6) == 0) {
			int n = unhex(line + 6, buf);
			ssize_t r = qb_rb_chunk_write(rb, buf, n);
			if (r < 0)
				printf("err %zd\n", r);
			else
				printf("wrote %zd\n", r);
		} else if (strncmp(line, "read ", 5) == 0) {
			ssize_t r = qb_rb_chunk_read(rb, buf, sizeof(buf), atoi(line + 5));
			if (r < 0) {
				printf("err %zd\n", r);
			} else {
				printf("read ");
				for (ssize_t i = 0; i < r; i++)
					printf("%02x", buf[i]);
				printf("\n");
			}
		} else if (strncmp(line, "refcount", 8) == 0) {
			printf("refcount %d\n", qb_rb_refcount_get(rb));
		} else if (strncmp(line, "userdata", 8) == 0) {
			printf("userdata %d\n", *(int32_t *)qb_rb_shared_user_data_get(rb));
		} else if (strncmp(line, "close", 5) == 0) {
			qb_rb_close(rb);
			printf("closed\n");
			return 0;
		}
		fflush(stdout);
	}
	return 0;
}
