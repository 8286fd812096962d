/*
 * fill: create N conntrack entries in the CURRENT network namespace, fast.
 *
 *   ip netns exec NS fill N [--start S] [--jobs J] [--batch B]
 *
 * Sends raw IPv4/UDP datagrams (IPPROTO_RAW, i.e. IP_HDRINCL) with sendmmsg, each
 * with a distinct tuple 127.0.0.1:sport -> 127.a.b.c:dport, so each one creates and
 * confirms one conntrack entry on the way out (the entry is confirmed at postrouting,
 * before the packet reaches lo). The namespace must be prepared first (see run.mjs):
 *
 *   ip link set lo up
 *   nft: table with an output chain that uses conntrack (ct state new counter), and a
 *        prerouting chain at priority -300 (before conntrack at -200) that drops the
 *        looped-back packets, so no socket lookup / ICMP port-unreachable happens
 *   sysctl net.netfilter.nf_conntrack_udp_timeout=3600 (entries outlive the run)
 *
 * Tuple i (i = S .. S+N-1): dport = 1024 + (i mod 64512), and k = i div 64512 picks
 * dst 127.(1 + k div 65536).(k div 256 mod 256).(k mod 256) and sport 40000 + (k mod 16).
 * Entries from two runs with disjoint [S, S+N) ranges never collide.
 *
 * J worker processes (default: online CPUs) each send a contiguous slice.
 * Prints {"sent":..,"seconds":..,"rate":..}.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <linux/ip.h>
#include <linux/udp.h>

#define PORTS 64512u
#define MAXBATCH 1024

struct pkt {
	struct iphdr ip;
	struct udphdr udp;
} __attribute__((packed));

static void die(const char *what)
{
	fprintf(stderr, "fill: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void tuple(uint64_t i, uint32_t *daddr, uint16_t *sport, uint16_t *dport)
{
	uint64_t k = i / PORTS;
	*dport = 1024 + (uint16_t)(i % PORTS);
	*sport = 40000 + (uint16_t)(k % 16);
	*daddr = (127u << 24) | ((uint32_t)(1 + k / 65536) << 16) | ((uint32_t)(k % 65536));
}

static void worker(uint64_t from, uint64_t to, unsigned batch)
{
	int fd = socket(AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
	if (fd < 0)
		die("socket(AF_INET, SOCK_RAW, IPPROTO_RAW)");
	int sndbuf = 16 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf));

	static struct pkt pkts[MAXBATCH];
	static struct sockaddr_in addrs[MAXBATCH];
	static struct iovec iov[MAXBATCH];
	static struct mmsghdr msgs[MAXBATCH];
	unsigned j;

	for (j = 0; j < batch; j++) {
		memset(&pkts[j], 0, sizeof(pkts[j]));
		pkts[j].ip.version = 4;
		pkts[j].ip.ihl = 5;
		pkts[j].ip.ttl = 64;
		pkts[j].ip.protocol = IPPROTO_UDP;
		pkts[j].ip.saddr = htonl(INADDR_LOOPBACK);
		pkts[j].ip.tot_len = htons(sizeof(struct pkt));
		pkts[j].udp.len = htons(sizeof(struct udphdr));
		pkts[j].udp.check = 0; /* IPv4 UDP: no checksum */
		iov[j].iov_base = &pkts[j];
		iov[j].iov_len = sizeof(struct pkt);
		addrs[j].sin_family = AF_INET;
		memset(&msgs[j], 0, sizeof(msgs[j]));
		msgs[j].msg_hdr.msg_iov = &iov[j];
		msgs[j].msg_hdr.msg_iovlen = 1;
		msgs[j].msg_hdr.msg_name = &addrs[j];
		msgs[j].msg_hdr.msg_namelen = sizeof(addrs[j]);
	}

	uint64_t i = from;
	while (i < to) {
		unsigned n = (to - i < batch) ? (unsigned)(to - i) : batch;
		for (j = 0; j < n; j++) {
			uint32_t daddr;
			uint16_t sport, dport;
			tuple(i + j, &daddr, &sport, &dport);
			pkts[j].ip.daddr = htonl(daddr);
			pkts[j].ip.id = htons((uint16_t)(i + j));
			pkts[j].udp.source = htons(sport);
			pkts[j].udp.dest = htons(dport);
			addrs[j].sin_addr.s_addr = htonl(daddr);
		}
		unsigned off = 0;
		while (off < n) {
			int r = sendmmsg(fd, msgs + off, n - off, 0);
			if (r < 0) {
				if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) {
					/* ENOBUFS: skb could not be allocated/queued; the entry may not exist. */
					usleep(100);
					continue;
				}
				die("sendmmsg");
			}
			off += r;
		}
		i += n;
	}
	close(fd);
}

int main(int argc, char **argv)
{
	uint64_t n = 0, start = 0;
	long jobs = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned batch = MAXBATCH;
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--start") && i + 1 < argc)
			start = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--jobs") && i + 1 < argc)
			jobs = strtol(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
			batch = (unsigned)strtoul(argv[++i], NULL, 10);
		else if (argv[i][0] != '-' && n == 0)
			n = strtoull(argv[i], NULL, 10);
		else {
			fprintf(stderr, "usage: fill N [--start S] [--jobs J] [--batch B]\n");
			return 2;
		}
	}
	if (jobs < 1)
		jobs = 1;
	if (batch < 1 || batch > MAXBATCH)
		batch = MAXBATCH;
	if ((uint64_t)jobs > n && n > 0)
		jobs = (long)n;

	double t0 = now();
	if (n > 0) {
		if (jobs == 1) {
			worker(start, start + n, batch);
		} else {
			uint64_t per = n / jobs, from = start;
			long w;
			for (w = 0; w < jobs; w++) {
				uint64_t to = (w == jobs - 1) ? start + n : from + per;
				pid_t pid = fork();
				if (pid < 0)
					die("fork");
				if (pid == 0) {
					worker(from, to, batch);
					_exit(0);
				}
				from = to;
			}
			int status, failed = 0;
			while (wait(&status) > 0)
				if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
					failed = 1;
			if (failed) {
				fprintf(stderr, "fill: a worker failed\n");
				return 1;
			}
		}
	}
	double secs = now() - t0;
	printf("{\"sent\":%llu,\"seconds\":%.6f,\"rate\":%.0f}\n", (unsigned long long)n, secs,
	       secs > 0 ? n / secs : 0.0);
	return 0;
}
