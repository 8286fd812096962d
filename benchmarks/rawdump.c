/*
 * rawdump: the floor for a ctnetlink conntrack dump.
 *
 * Kernel uapi headers only. Opens NETLINK_NETFILTER (optionally inside another
 * network namespace), asks for IPCTNL_MSG_CT_GET with NLM_F_DUMP, receives into
 * a 64 KiB buffer until NLMSG_DONE and only counts: nothing is decoded beyond
 * the netlink headers. This is what any user-space reader pays at minimum.
 *
 *   rawdump [--netns PATH] [--family inet|inet6|unspec] [--expect] [--save FILE]
 *   rawdump [--netns PATH] --stats N
 *
 * Dump mode prints  {"messages":..,"bytes":..,"datagrams":..,"seconds":..,...}
 * Stats mode sends IPCTNL_MSG_CT_GET_STATS (no dump) N times on one socket,
 * waits for each answer, and prints {"calls":..,"seconds":..,"nsPerCall":..}.
 *
 * --save FILE writes every received datagram as [u32 little-endian length][bytes]
 * (used to record real kernel messages as test fixtures); --expect dumps the expectation
 * table instead (IPCTNL_MSG_EXP_GET).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>

#define RXBUF (64 * 1024)

static void die(const char *what)
{
	fprintf(stderr, "rawdump: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: rawdump [--netns PATH] [--family inet|inet6|unspec] [--expect] [--save FILE]\n"
		"       rawdump [--netns PATH] --stats N\n");
	exit(2);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void put_le32(unsigned char *p, uint32_t v)
{
	p[0] = v & 0xff;
	p[1] = (v >> 8) & 0xff;
	p[2] = (v >> 16) & 0xff;
	p[3] = (v >> 24) & 0xff;
}

/* NFNL_SUBSYS_CTNETLINK, or NFNL_SUBSYS_CTNETLINK_EXP with --expect. */
static uint16_t subsys = NFNL_SUBSYS_CTNETLINK;

static void send_request(int fd, uint16_t msgtype, uint16_t flags, uint32_t seq, uint8_t family)
{
	struct {
		struct nlmsghdr nlh;
		struct nfgenmsg nfg;
	} req;
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };

	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = (subsys << 8) | msgtype;
	req.nlh.nlmsg_flags = flags;
	req.nlh.nlmsg_seq = seq;
	req.nfg.nfgen_family = family;
	req.nfg.version = NFNETLINK_V0;
	req.nfg.res_id = 0;
	if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("sendto");
}

/* Returns 1 when NLMSG_DONE (or the single answer of a non-dump request) was seen. */
struct tally {
	unsigned long long messages, bytes, datagrams, interrupted;
};

static int walk(unsigned char *buf, ssize_t len, uint32_t seq, uint32_t portid, int dump,
		struct tally *t)
{
	struct nlmsghdr *nlh = (struct nlmsghdr *)buf;
	int done = 0;

	for (; NLMSG_OK(nlh, len); nlh = NLMSG_NEXT(nlh, len)) {
		if (nlh->nlmsg_seq != seq) {
			fprintf(stderr, "rawdump: unexpected seq %u (want %u)\n", nlh->nlmsg_seq, seq);
			exit(1);
		}
		if (portid && nlh->nlmsg_pid != portid && nlh->nlmsg_pid != 0) {
			fprintf(stderr, "rawdump: unexpected portid %u\n", nlh->nlmsg_pid);
			exit(1);
		}
		if (nlh->nlmsg_flags & NLM_F_DUMP_INTR)
			t->interrupted++;
		if (nlh->nlmsg_type == NLMSG_DONE)
			return 1;
		if (nlh->nlmsg_type == NLMSG_ERROR) {
			struct nlmsgerr *e = NLMSG_DATA(nlh);
			if (e->error == 0) {
				if (!dump)
					done = 1;
				continue;
			}
			errno = -e->error;
			die("kernel answered NLMSG_ERROR");
		}
		t->messages++;
		if (!dump)
			done = 1;
	}
	if (len != 0) {
		fprintf(stderr, "rawdump: %zd trailing bytes in datagram\n", len);
		exit(1);
	}
	return done;
}

int main(int argc, char **argv)
{
	const char *netns = NULL, *save = NULL;
	long stats = -1;
	uint8_t family = AF_UNSPEC;
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--netns") && i + 1 < argc)
			netns = argv[++i];
		else if (!strcmp(argv[i], "--save") && i + 1 < argc)
			save = argv[++i];
		else if (!strcmp(argv[i], "--expect"))
			subsys = NFNL_SUBSYS_CTNETLINK_EXP; /* IPCTNL_MSG_EXP_GET is IPCTNL_MSG_CT_GET's number */
		else if (!strcmp(argv[i], "--stats") && i + 1 < argc)
			stats = strtol(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--family") && i + 1 < argc) {
			const char *f = argv[++i];
			if (!strcmp(f, "inet") || !strcmp(f, "ipv4"))
				family = AF_INET;
			else if (!strcmp(f, "inet6") || !strcmp(f, "ipv6"))
				family = AF_INET6;
			else if (!strcmp(f, "unspec"))
				family = AF_UNSPEC;
			else
				usage();
		} else
			usage();
	}

	if (netns) {
		int nsfd = open(netns, O_RDONLY | O_CLOEXEC);
		if (nsfd < 0)
			die(netns);
		if (setns(nsfd, CLONE_NEWNET) < 0)
			die("setns");
		close(nsfd);
	}

	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
	if (fd < 0)
		die("socket(NETLINK_NETFILTER)");
	struct sockaddr_nl local = { .nl_family = AF_NETLINK };
	if (bind(fd, (struct sockaddr *)&local, sizeof(local)) < 0)
		die("bind");
	socklen_t sl = sizeof(local);
	if (getsockname(fd, (struct sockaddr *)&local, &sl) < 0)
		die("getsockname");
	uint32_t portid = local.nl_pid;

	static unsigned char buf[RXBUF] __attribute__((aligned(8)));
	uint32_t seq = (uint32_t)time(NULL);
	struct tally t = { 0 };

	if (stats >= 0) {
		/* GET_STATS: one answer, no dump. Warm up once, then time N round trips. */
		long n;
		double t0 = 0;
		for (n = -1; n < stats; n++) {
			if (n == 0)
				t0 = now();
			seq++;
			send_request(fd, IPCTNL_MSG_CT_GET_STATS, NLM_F_REQUEST, seq, AF_UNSPEC);
			for (;;) {
				ssize_t r = recv(fd, buf, sizeof(buf), 0);
				if (r < 0) {
					if (errno == EINTR)
						continue;
					die("recv");
				}
				if (walk(buf, r, seq, portid, 0, &t))
					break;
			}
		}
		double secs = now() - t0;
		printf("{\"calls\":%ld,\"seconds\":%.9f,\"nsPerCall\":%.1f}\n", stats, secs,
		       stats > 0 ? secs * 1e9 / stats : 0.0);
		return 0;
	}

	FILE *out = NULL;
	if (save) {
		out = fopen(save, "wb");
		if (!out)
			die(save);
	}

	seq++;
	double t0 = now();
	send_request(fd, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family);
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), MSG_TRUNC);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			die("recv");
		}
		if ((size_t)r > sizeof(buf)) {
			fprintf(stderr, "rawdump: datagram of %zd bytes truncated\n", r);
			exit(1);
		}
		t.datagrams++;
		t.bytes += r;
		if (out) {
			unsigned char len[4];
			put_le32(len, (uint32_t)r);
			if (fwrite(len, 1, 4, out) != 4 || fwrite(buf, 1, r, out) != (size_t)r)
				die("write --save");
		}
		if (walk(buf, r, seq, portid, 1, &t))
			break;
	}
	double secs = now() - t0;
	if (out && fclose(out) != 0)
		die("close --save");
	printf("{\"messages\":%llu,\"bytes\":%llu,\"datagrams\":%llu,\"seconds\":%.6f,"
	       "\"interrupted\":%llu}\n",
	       t.messages, t.bytes, t.datagrams, secs, t.interrupted);
	return 0;
}
