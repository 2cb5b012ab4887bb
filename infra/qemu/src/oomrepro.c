/*
 * oomrepro: a static reproducer of an oommodel scenario on a real kernel, run as the last step
 * of the initramfs /init.  It reads /oomrepro.conf (written by sweeps/calibrate/translate.py), creates a
 * cgroup-v2 memcg with memory.max, forks one process per child (policy, nice, affinity,
 * oom_score_adj, start offset, bytes to touch) into it, and stays outside the memcg as a
 * SCHED_FIFO-99 watchdog on a CPU no child uses.
 *
 * Every event goes to /dev/kmsg ("oomsweep: ...") so it shares the kernel log's clock with
 * "Killed process N" and "oom_reaper: reaped process N".  The watchdog declares a stall when
 * charges have been failing (memory.events "oom" rising) for lockup_after_s without progress (a
 * child exit, a new oom_kill, memory.current dropping) while an allocator child is alive, dumps
 * /proc/softirqs, ksoftirqd's state and the children's stacks, restores RT throttling and kills
 * the children, so that every run ends.
 *
 * Config lines (one setting per line, '#' comments):
 *   run <index>                 horizon_s <f>   lockup_after_s <f>   memory_max <bytes|max>
 *   watchdog_cpu <n>            reaper <policy> <prio> <nice> <cpumask hex|all>
 *   child <group> <index> <role:allocator|sleeper|hog> <policy:normal|batch|idle|fifo|rr>
 *         <prio> <nice> <cpumask hex|all> <bytes> <oom_score_adj> <start_us>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#define MAX_CHILDREN 4096
#define CG "/sys/fs/cgroup/oomsweep"
#define FREED_BYTES (256 << 10) /* MEMCG_CHARGE_BATCH pages: less is charge/uncharge jitter, not progress */

enum role { ROLE_ALLOCATOR, ROLE_SLEEPER, ROLE_HOG };

struct child {
	char group[64];
	int index;
	enum role role;
	int policy, prio, nice;
	int all_cpus;
	unsigned long long mask;
	unsigned long long bytes;
	int oom_score_adj;
	long long start_us;
	pid_t pid;
	int done;
	double exit_t;
};

static struct child kids[MAX_CHILDREN];
static int nkids;
static double horizon_s = 60, lockup_after_s = 20;
static char memory_max[64] = "max";
static int watchdog_cpu = -1, run_index;
static char reaper_line[512];
static int kmsg = -1;
static struct timespec t0;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (ts.tv_sec - t0.tv_sec) + (ts.tv_nsec - t0.tv_nsec) / 1e9;
}

/* One event line into the kernel log (same clock as the OOM killer's lines) and to stdout. */
static void event(const char *fmt, ...)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "oomsweep: ");
	va_list ap;
	va_start(ap, fmt);
	n += vsnprintf(buf + n, sizeof buf - n, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 2)
		n = sizeof buf - 2;
	buf[n++] = '\n';
	if (kmsg >= 0 && write(kmsg, buf, n) < 0)
		perror("kmsg");
}

static int write_file(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ssize_t r = write(fd, val, strlen(val));
	close(fd);
	return r < 0 ? -1 : 0;
}

static void die(const char *what)
{
	event("error %s: %s", what, strerror(errno));
	fprintf(stderr, "oomrepro: %s: %s\n", what, strerror(errno));
	exit(2);
}

static int parse_policy(const char *s)
{
	if (!strcmp(s, "normal")) return SCHED_OTHER;
	if (!strcmp(s, "batch")) return SCHED_BATCH;
	if (!strcmp(s, "idle")) return SCHED_IDLE;
	if (!strcmp(s, "fifo")) return SCHED_FIFO;
	if (!strcmp(s, "rr")) return SCHED_RR;
	fprintf(stderr, "oomrepro: bad policy %s\n", s);
	exit(2);
}

static void read_config(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[512], key[32];
	if (!f)
		die("open config");
	while (fgets(line, sizeof line, f)) {
		if (line[0] == '#' || sscanf(line, "%31s", key) != 1)
			continue;
		if (!strcmp(key, "child")) {
			struct child *c = &kids[nkids];
			char role[16], pol[16], mask[32];
			if (nkids >= MAX_CHILDREN)
				die("too many children");
			if (sscanf(line, "child %63s %d %15s %15s %d %d %31s %llu %d %lld", c->group, &c->index,
				   role, pol, &c->prio, &c->nice, mask, &c->bytes, &c->oom_score_adj,
				   &c->start_us) != 10) {
				fprintf(stderr, "oomrepro: bad child line: %s", line);
				exit(2);
			}
			c->role = !strcmp(role, "sleeper") ? ROLE_SLEEPER : !strcmp(role, "hog") ? ROLE_HOG : ROLE_ALLOCATOR;
			c->policy = parse_policy(pol);
			c->all_cpus = !strcmp(mask, "all");
			c->mask = c->all_cpus ? 0 : strtoull(mask, NULL, 16);
			nkids++;
		} else if (!strcmp(key, "horizon_s")) {
			sscanf(line, "%*s %lf", &horizon_s);
		} else if (!strcmp(key, "lockup_after_s")) {
			sscanf(line, "%*s %lf", &lockup_after_s);
		} else if (!strcmp(key, "memory_max")) {
			sscanf(line, "%*s %63s", memory_max);
		} else if (!strcmp(key, "watchdog_cpu")) {
			sscanf(line, "%*s %d", &watchdog_cpu);
		} else if (!strcmp(key, "reaper")) {
			snprintf(reaper_line, sizeof reaper_line, "%s", line);
		} else if (!strcmp(key, "run")) {
			sscanf(line, "%*s %d", &run_index);
		}
	}
	fclose(f);
}

static void setup_memcg(void)
{
	mkdir("/sys/fs/cgroup", 0755);
	if (mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, NULL) && errno != EBUSY)
		die("mount cgroup2");
	if (write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory"))
		die("enable +memory");
	if (mkdir(CG, 0755) && errno != EEXIST)
		die("mkdir memcg");
	if (write_file(CG "/memory.max", memory_max))
		die("memory.max");
	write_file(CG "/memory.swap.max", "0"); /* no swap here anyway */
}

/* The child: join the memcg, take its scheduling attributes, wait for its start, touch memory. */
static void child_main(struct child *c, int go_fd)
{
	char buf[32];
	cpu_set_t set;
	struct sched_param sp = { .sched_priority = 0 };

	if (write_file(CG "/cgroup.procs", "0"))
		die("cgroup.procs");
	snprintf(buf, sizeof buf, "%d", c->oom_score_adj);
	if (write_file("/proc/self/oom_score_adj", buf))
		die("oom_score_adj");
	CPU_ZERO(&set);
	for (int i = 0; i < 64; i++)
		if (c->all_cpus || ((c->mask >> i) & 1))
			CPU_SET(i, &set);
	if (sched_setaffinity(0, sizeof set, &set))
		die("sched_setaffinity");
	if (c->policy == SCHED_FIFO || c->policy == SCHED_RR)
		sp.sched_priority = c->prio;
	if (sched_setscheduler(0, c->policy, &sp))
		die("sched_setscheduler");
	if (c->policy != SCHED_FIFO && c->policy != SCHED_RR && c->policy != SCHED_IDLE)
		if (setpriority(PRIO_PROCESS, 0, c->nice))
			die("setpriority");
	/* Block on the go pipe: the watchdog writes t0 once per child, all children start together. */
	if (read(go_fd, &t0, sizeof t0) != sizeof t0)
		die("read go");
	close(go_fd);
	if (c->start_us > 0) {
		struct timespec ts = t0;
		ts.tv_sec += c->start_us / 1000000;
		ts.tv_nsec += (c->start_us % 1000000) * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
	}
	if (c->role == ROLE_HOG)
		for (;;)
			__asm__ volatile("" ::: "memory");
	if (c->bytes) {
		char *p = mmap(NULL, c->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			die("mmap");
		for (unsigned long long off = 0; off < c->bytes; off += 4096)
			p[off] = 1;
	}
	if (c->role == ROLE_SLEEPER)
		for (;;)
			pause();
	_exit(0);
}

static long long memcg_event(const char *name)
{
	char line[128], key[64];
	long long v, out = -1;
	FILE *f = fopen(CG "/memory.events", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "%63s %lld", key, &v) == 2 && !strcmp(key, name))
			out = v;
	fclose(f);
	return out;
}

static long long memcg_value(const char *file)
{
	char path[128];
	long long v = -1;
	snprintf(path, sizeof path, CG "/%s", file);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static void cat(const char *path)
{
	char buf[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	printf("--- %s\n", path);
	fflush(stdout);
	while ((n = read(fd, buf, sizeof buf)) > 0)
		fwrite(buf, 1, n, stdout);
	fflush(stdout);
	close(fd);
}

/* CPU seconds (utime+stime) of every task whose comm starts with prefix. */
static double cpu_of_comm(const char *prefix, int print)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	double total = 0;
	long hz = sysconf(_SC_CLK_TCK);
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		char path[300], buf[1024], comm[64], state;
		unsigned long long ut, st;
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof buf - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = 0;
		char *l = strchr(buf, '('), *r = strrchr(buf, ')');
		if (!l || !r || r - l - 1 >= (long)sizeof comm)
			continue;
		memcpy(comm, l + 1, r - l - 1);
		comm[r - l - 1] = 0;
		if (strncmp(comm, prefix, strlen(prefix)))
			continue;
		if (sscanf(r + 2, "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &state, &ut, &st) != 3)
			continue;
		total += (double)(ut + st) / hz;
		if (print) {
			event("task comm=%s pid=%s state=%c cpu_s=%.3f", comm, e->d_name, state, (double)(ut + st) / hz);
			snprintf(path, sizeof path, "/proc/%s/schedstat", e->d_name);
			cat(path);
		}
	}
	closedir(d);
	return total;
}

static void dump_state(void)
{
	char path[64];
	cat("/proc/softirqs");
	cpu_of_comm("ksoftirqd", 1);
	cpu_of_comm("oom_reaper", 1);
	cat(CG "/memory.events");
	for (int i = 0; i < nkids; i++) {
		if (kids[i].done)
			continue;
		snprintf(path, sizeof path, "/proc/%d/stack", kids[i].pid);
		cat(path);
		snprintf(path, sizeof path, "/proc/%d/sched", kids[i].pid);
		cat(path);
	}
	sleep(1);
	cat("/proc/softirqs"); /* frozen TIMER/RCU counters of a CPU show a starved ksoftirqd */
	write_file("/proc/sysrq-trigger", "l");
}

static int reap_children(double *last_progress)
{
	int status, alive = 0;
	struct rusage ru;
	pid_t pid;
	while ((pid = wait4(-1, &status, WNOHANG, &ru)) > 0) {
		for (int i = 0; i < nkids; i++) {
			if (kids[i].pid != pid)
				continue;
			kids[i].done = 1;
			kids[i].exit_t = now_s();
			*last_progress = kids[i].exit_t;
			event("exit child=%d group=%s pid=%d t=%.6f sig=%d code=%d cpu_s=%.6f", i, kids[i].group, pid,
			      kids[i].exit_t, WIFSIGNALED(status) ? WTERMSIG(status) : 0,
			      WIFEXITED(status) ? WEXITSTATUS(status) : -1,
			      ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
				      ru.ru_stime.tv_usec / 1e6);
		}
	}
	for (int i = 0; i < nkids; i++)
		if (!kids[i].done && kids[i].role == ROLE_ALLOCATOR)
			alive++;
	return alive;
}

static pid_t pid_of_comm(const char *name)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	pid_t found = -1;
	while (d && (e = readdir(d))) {
		char path[300], comm[64] = "";
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof comm, f) && !strncmp(comm, name, strlen(name)) && comm[strlen(name)] == '\n')
			found = atoi(e->d_name);
		fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

/* "reaper <policy> <prio> <nice> <cpumask|all>": the oom_reaper kthread's attributes. */
static void setup_reaper(void)
{
	char pol[16], mask[32];
	int prio, nice;
	struct sched_param sp = { 0 };
	cpu_set_t set;
	pid_t pid;
	if (!reaper_line[0])
		return;
	if (sscanf(reaper_line, "reaper %15s %d %d %31s", pol, &prio, &nice, mask) != 4 ||
	    (pid = pid_of_comm("oom_reaper")) < 0) {
		event("error reaper setup");
		exit(2);
	}
	int policy = parse_policy(pol);
	if (policy == SCHED_FIFO || policy == SCHED_RR)
		sp.sched_priority = prio;
	if (sched_setscheduler(pid, policy, &sp))
		die("oom_reaper sched_setscheduler");
	if (policy != SCHED_FIFO && policy != SCHED_RR && policy != SCHED_IDLE && setpriority(PRIO_PROCESS, pid, nice))
		die("oom_reaper setpriority");
	if (strcmp(mask, "all")) {
		unsigned long long m = strtoull(mask, NULL, 16);
		CPU_ZERO(&set);
		for (int i = 0; i < 64; i++)
			if ((m >> i) & 1)
				CPU_SET(i, &set);
		if (sched_setaffinity(pid, sizeof set, &set))
			die("oom_reaper affinity");
	}
	event("reaper pid=%d policy=%s prio=%d nice=%d cpus=%s", pid, pol, prio, nice, mask);
}

int main(int argc, char **argv)
{
	const char *conf = argc > 1 ? argv[1] : "/oomrepro.conf";
	int go[2];
	struct sched_param sp = { .sched_priority = 99 };
	cpu_set_t set;

	kmsg = open("/dev/kmsg", O_WRONLY);
	read_config(conf);
	setup_memcg();
	setup_reaper();
	if (watchdog_cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(watchdog_cpu, &set);
		if (sched_setaffinity(0, sizeof set, &set))
			die("watchdog affinity");
	}
	if (sched_setscheduler(0, SCHED_FIFO, &sp))
		die("watchdog SCHED_FIFO");
	mlockall(MCL_CURRENT | MCL_FUTURE);
	if (pipe(go))
		die("pipe");
	double ksoftirqd0 = cpu_of_comm("ksoftirqd", 0), reaper0 = cpu_of_comm("oom_reaper", 0);
	clock_gettime(CLOCK_MONOTONIC, &t0); /* provisional; reset at go */
	for (int i = 0; i < nkids; i++) {
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			close(go[1]);
			munlockall();
			child_main(&kids[i], go[0]);
		}
		kids[i].pid = pid;
	}
	close(go[0]);
	sleep(1); /* let every child join the memcg and block on the pipe */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	event("start run=%d children=%d horizon_s=%.3f lockup_after_s=%.3f memory_max=%s watchdog_cpu=%d",
	      run_index, nkids, horizon_s, lockup_after_s, memory_max, watchdog_cpu);
	for (int i = 0; i < nkids; i++)
		event("child child=%d group=%s index=%d pid=%d", i, kids[i].group, kids[i].index, kids[i].pid);
	for (int i = 0; i < nkids; i++) /* one t0 per child releases them all at once */
		if (write(go[1], &t0, sizeof t0) != sizeof t0)
			die("write go");
	close(go[1]);

	/*
	 * Stall clock: a stall needs failing charges.  It starts at the first rise of memory.events
	 * "oom" after the last progress and ends at the next progress: a child's exit, a new oom_kill,
	 * or memory.current dropping by FREED_BYTES below its value at the stall's start (memory
	 * freed; exits can lag far behind the freeing under preempt=full, real-kernel-6.1.md
	 * section 4).  Each rise is logged as an "oom" mark (at most every 100 ms, and always the first
	 * after progress) so that the parser can also end stall intervals at oom_reaper's reaps.
	 */
	double last_progress = 0, max_stall = 0, stall_start = -1, last_mark = -1;
	long long last_kills = 0, last_oom = 0, stall_current = 0;
	int stalled = 0, end_reason = 0; /* 0 done, 1 horizon, 2 stall */
	for (;;) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		double before = last_progress;
		int alive = reap_children(&last_progress);
		long long kills = memcg_event("oom_kill"), oom = memcg_event("oom");
		double t = now_s();
		if (kills > last_kills) {
			last_kills = kills;
			last_progress = t;
		}
		long long current = memcg_value("memory.current");
		if (stall_start >= 0 && last_progress == before && current >= 0 && current <= stall_current - FREED_BYTES) {
			/* memory came back while charges were failing: progress (single pages come and go) */
			event("progress t=%.6f current=%lld was=%lld", t, current, stall_current);
			last_progress = t;
		}
		if (last_progress != before)
			stall_start = -1;
		if (oom > last_oom) {
			if (stall_start < 0 || t - last_mark >= 0.1) {
				event("oom t=%.6f oom=%lld oom_kill=%lld", t, oom, kills);
				last_mark = t;
			}
			if (stall_start < 0) {
				stall_start = t;
				stall_current = current;
			}
			last_oom = oom;
		}
		if (alive == 0)
			break;
		if (stall_start >= 0 && t - stall_start > max_stall)
			max_stall = t - stall_start;
		if (stall_start >= 0 && t - stall_start >= lockup_after_s) {
			stalled = 1;
			end_reason = 2;
			event("stall t=%.6f since=%.6f last_progress=%.6f oom=%lld oom_kill=%lld", t, stall_start,
			      last_progress, oom, kills);
			dump_state();
			event("stall oom_after_1s=%lld", memcg_event("oom"));
			break;
		}
		if (t >= horizon_s) {
			end_reason = 1;
			break;
		}
	}
	double t_end = now_s();
	/* Every run ends: give starved children a CPU again, then kill whatever is left. */
	write_file("/proc/sys/kernel/sched_rt_runtime_us", "950000");
	for (int i = 0; i < nkids; i++)
		if (!kids[i].done)
			kill(kids[i].pid, SIGKILL);
	for (int k = 0; k < 2000; k++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		int left = 0;
		reap_children(&last_progress);
		for (int i = 0; i < nkids; i++)
			left += !kids[i].done;
		if (!left)
			break;
		nanosleep(&ts, NULL);
	}
	double ksoftirqd1 = cpu_of_comm("ksoftirqd", 0), reaper1 = cpu_of_comm("oom_reaper", 0);
	event("end run=%d reason=%s t=%.6f max_stall_s=%.6f stalled=%d oom=%lld oom_kill=%lld ksoftirqd_cpu_s=%.3f "
	      "oom_reaper_cpu_s=%.3f",
	      run_index, end_reason == 2 ? "stall" : end_reason == 1 ? "horizon" : "done", t_end, max_stall, stalled,
	      memcg_event("oom"), memcg_event("oom_kill"), ksoftirqd1 - ksoftirqd0, reaper1 - reaper0);
	cat(CG "/memory.events");
	return 0;
}
