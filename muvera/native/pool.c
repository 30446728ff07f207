/* Worker threads shared by the kernels, and what the loader asks the library itself. */
#include "muvera.h"

MUVERA_EXPORT int64_t muvera_abi_version(void) { return MUVERA_ABI_VERSION; }

/* -- threads ------------------------------------------------------------------------ */

#ifdef MUVERA_HAVE_THREADS
/* Jobs 1 .. of a run_jobs call on new threads; a job whose thread cannot be started runs
 * on the caller. */
static void run_on_new_threads(void *(*fn)(void *), char *base, size_t job_size, int64_t n) {
    pthread_t threads[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t t = 1; t < n; ++t)
        started[t] = pthread_create(&threads[t], NULL, fn, base + t * job_size) == 0;
    fn(base);
    for (int64_t t = 1; t < n; ++t) {
        if (started[t]) {
            pthread_join(threads[t], NULL);
        } else {
            fn(base + t * job_size);
        }
    }
}

/* A pool of worker threads, started on first use and then parked on a condition variable:
 * waking one costs a few microseconds, where starting a thread costs tens (a search runs
 * two multi-threaded kernels per query). One caller at a time uses it; a concurrent caller
 * starts threads of its own. A forked child starts with an empty pool. */
static struct {
    pthread_mutex_t lock; /* guards the fields below */
    pthread_cond_t wake, done;
    int64_t started;      /* worker threads running */
    void *(*fn)(void *);
    char *jobs;
    size_t job_size;
    int64_t next, n_jobs; /* jobs next .. n_jobs - 1 are not taken yet */
    int64_t running;      /* jobs taken and not finished */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          0, NULL, NULL, 0, 0, 0, 0};
static pthread_mutex_t pool_user = PTHREAD_MUTEX_INITIALIZER; /* the caller using the pool */
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_after_fork(void) { /* the workers do not exist in the child */
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pthread_mutex_init(&pool_user, NULL);
    pool.started = pool.next = pool.n_jobs = pool.running = 0;
}

static void pool_register_fork(void) { pthread_atfork(NULL, NULL, pool_after_fork); }

/* Takes and runs jobs until none is left untaken; called with pool.lock held. */
static void pool_take_jobs(void) {
    while (pool.next < pool.n_jobs) {
        const int64_t j = pool.next++;
        void *(*fn)(void *) = pool.fn;
        char *job = pool.jobs + j * pool.job_size;
        ++pool.running;
        pthread_mutex_unlock(&pool.lock);
        fn(job);
        pthread_mutex_lock(&pool.lock);
        if (--pool.running == 0 && pool.next >= pool.n_jobs) pthread_cond_broadcast(&pool.done);
    }
}

static void *pool_worker(void *unused) {
    (void)unused;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        while (pool.next >= pool.n_jobs) pthread_cond_wait(&pool.wake, &pool.lock);
        pool_take_jobs();
    }
    return NULL;
}
#endif

/* Runs fn on jobs[0 .. n) (each job_size bytes): job 0 on the caller, the others on pool
 * threads (or on the caller, whichever gets to them first); returns when all are done. */
void run_jobs(void *(*fn)(void *), void *jobs, size_t job_size, int64_t n) {
    char *base = (char *)jobs;
#ifdef MUVERA_HAVE_THREADS
    if (n <= 1) {
        if (n == 1) fn(base);
        return;
    }
    pthread_once(&pool_once, pool_register_fork);
    if (pthread_mutex_trylock(&pool_user) != 0) { /* another caller has the pool */
        run_on_new_threads(fn, base, job_size, n);
        return;
    }
    pthread_mutex_lock(&pool.lock);
    while (pool.started < n - 1 && pool.started < MAX_THREADS) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, pool_worker, NULL) != 0) break;
        pthread_detach(thread);
        ++pool.started;
    }
    pool.fn = fn;
    pool.jobs = base;
    pool.job_size = job_size;
    pool.next = 1;
    pool.n_jobs = n;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    fn(base);
    pthread_mutex_lock(&pool.lock);
    pool_take_jobs(); /* those no worker has started (none may have been started at all) */
    while (pool.running > 0) pthread_cond_wait(&pool.done, &pool.lock);
    pool.next = pool.n_jobs = 0;
    pthread_mutex_unlock(&pool.lock);
    pthread_mutex_unlock(&pool_user);
#else
    for (int64_t t = 0; t < n; ++t) fn(base + t * job_size);
#endif
}

/* Splits items 0 .. n (item i weighing sizes[i]) into `parts` consecutive ranges of about
 * equal weight: range t is bounds[t] .. bounds[t+1]. */
void split_ranges(const int64_t *sizes, int64_t n, int64_t parts, int64_t *bounds) {
    int64_t total = 0;
    for (int64_t i = 0; i < n; ++i) total += sizes[i] > 0 ? sizes[i] : 0;
    int64_t seen = 0, i = 0;
    bounds[0] = 0;
    for (int64_t t = 0; t < parts; ++t) {
        const int64_t target = total * (t + 1) / parts;
        while (i < n && (seen < target || t == parts - 1)) {
            seen += sizes[i] > 0 ? sizes[i] : 0;
            ++i;
        }
        bounds[t + 1] = i;
    }
}

int64_t clamp_threads(int64_t n_threads, int64_t n_items) {
    if (n_threads > n_items) n_threads = n_items;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    return n_threads < 1 ? 1 : n_threads;
}

/* -- dispatch ------------------------------------------------------------------------ */
/* The CPU level this library was compiled for: 0 generic, 1 AVX2 (+FMA, F16C), 2 AVX-512
 * (F, DQ, CD, BW, VL, VNNI). */
MUVERA_EXPORT int64_t muvera_compiled_level(void) {
#if defined(__AVX512F__) && defined(__AVX512DQ__) && defined(__AVX512CD__) &&              \
    defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__)
    return 2;
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    return 1;
#else
    return 0;
#endif
}

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define MUVERA_HAVE_CPUID 1
#endif

/* The highest level that the running CPU and operating system support (the OS must save
 * the AVX and AVX-512 registers: XGETBV). Always 0 off x86. */
MUVERA_EXPORT int64_t muvera_cpu_level(void) {
#ifdef MUVERA_HAVE_CPUID
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    const int f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return 0;
    unsigned xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    (void)xcr0_hi;
    if ((xcr0_lo & 0x6u) != 0x6u) return 0; /* SSE and AVX state */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const int avx2 = (b >> 5) & 1;
    if (!(avx2 && fma && f16c)) return 0;
    const int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 28) & 1) &&
                       ((b >> 30) & 1) && ((b >> 31) & 1) && ((c >> 11) & 1);
    if (avx512 && (xcr0_lo & 0xe6u) == 0xe6u) return 2; /* opmask and ZMM state too */
    return 1;
#else
    return 0;
#endif
}
