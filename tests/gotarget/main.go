// Command gotarget is a real Go program for profstore's integration tests and
// demo: it runs a steady, recognizable workload and exposes it through
// net/http/pprof (or writes one set of profiles to a directory with -out), so
// tests can scrape genuine Go pprof output instead of hand-made fixtures.
// It uses the standard library only, so it builds offline with a bare Go
// toolchain:
//
//	cd tests/gotarget && go build -trimpath -o /tmp/gotarget .
//
// Serve mode (default):
//
//	gotarget -listen 127.0.0.1:0 -write-port-file /tmp/gt.addr
//
// serves /debug/pprof/..., /debug/stats (runtime.MemStats counters as JSON)
// and /healthz until SIGTERM or SIGINT, then exits 0.
// The port file holds "host:port\n" and is written atomically (tmp + rename).
//
// Dump mode:
//
//	gotarget -out DIR -duration 3s
//
// runs the workload for -duration while CPU profiling, then writes cpu.pb.gz,
// heap.pb.gz, allocs.pb.gz, goroutine.pb.gz, block.pb.gz, mutex.pb.gz and
// threadcreate.pb.gz into DIR and exits 0. Nothing is served in this mode.
//
// Workload functions (each goroutine also carries the pprof label
// worker=<name>): main.hashWork, main.jsonWork, main.sortWork,
// main.allocWork (keeps a bounded ring of live buffers, so inuse_space is
// non-zero), main.contendedWork (mutex and block contention),
// main.blockedWork (blocks on channel receives) and main.parkedWorker (20
// goroutines parked on a channel). CPU-bound workers are duty-cycled so the
// whole process uses roughly one core. There is no randomness.
//
// Regression switch: -checksum adds main.checksumWork, which calls
// main.checksumBlock a fixed number of times per 10 ms tick (count-based, so
// a slower block costs more CPU, unlike the time-based duty cycles above).
// With -checksum-slow-after D, every block does -checksum-slow-factor times
// the work from D after start on: a real regression in one named function.
//
// Caller switch: -hashloop adds main.workloadHashLoop (worker=hashloop),
// which calls sha256.Sum256 on a 16 KiB buffer -hashloop-calls times per
// 10 ms tick (count-based too). With -hashloop-more-after D it makes
// -hashloop-factor times as many calls from D after start on. main.hashWork hashes as well, so
// crypto/sha256.block has two caller paths, one unchanged and one rising: the
// standard-library leaf rises because one caller's behaviour changed.
//
// Leak switch: with -leak-after D, main.leakyCache (worker=leak) allocates
// -leak-rate bytes per second from D after start on and keeps every buffer
// reachable forever: a real heap leak with one named allocation site.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	numParked      = 20
	numContenders  = 4
	numBlocked     = 2
	allocRingSize  = 256
	allocsPerTick  = 16
	allocTick      = 10 * time.Millisecond
	blockedTick    = 5 * time.Millisecond
	contendedBurst = 8
	contendedSpin  = 20000
	contendedPause = 3 * time.Millisecond
)

// Duty cycles (busy, idle) for the CPU-bound workers. Together with GC and
// the contended workers they add up to roughly one of the machine's cores.
var (
	hashDuty = [2]time.Duration{6 * time.Millisecond, 14 * time.Millisecond} // ~30%
	jsonDuty = [2]time.Duration{5 * time.Millisecond, 15 * time.Millisecond} // ~25%
	sortDuty = [2]time.Duration{3 * time.Millisecond, 17 * time.Millisecond} // ~15%
)

// The regression switch (see the package comment).
var (
	checksumOn         bool
	checksumSlowAfter  time.Duration
	checksumSlowFactor int
	checksumBlocks     int
	started            time.Time
)

const (
	checksumBlockBytes = 64 << 10
	checksumTick       = 10 * time.Millisecond
)

// The caller switch (see the package comment).
var (
	hashLoopOn        bool
	hashLoopCalls     int
	hashLoopMoreAfter time.Duration
	hashLoopFactor    int
)

const (
	hashLoopBytes = 16 << 10
	hashLoopTick  = 10 * time.Millisecond
)

// The leak switch (see the package comment).
var (
	leakAfter time.Duration
	leakRate  int
)

const (
	leakChunk = 64 << 10
	leakTick  = 100 * time.Millisecond
)

var dumpProfiles = []string{"heap", "allocs", "goroutine", "block", "mutex", "threadcreate"}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve net/http/pprof on (ignored with -out)")
	portFile := flag.String("write-port-file", "", "after listening, atomically write the actual host:port to this file")
	outDir := flag.String("out", "", "write profiles to this directory after -duration and exit instead of serving")
	duration := flag.Duration("duration", 3*time.Second, "how long to run the workload before writing profiles (only with -out)")
	flag.BoolVar(&checksumOn, "checksum", false, "also run main.checksumWork (the regression switch's victim)")
	flag.DurationVar(&checksumSlowAfter, "checksum-slow-after", 0, "from this long after start on, main.checksumBlock does more work per call (0: never)")
	flag.IntVar(&checksumSlowFactor, "checksum-slow-factor", 3, "how many times the work main.checksumBlock does once slowed")
	flag.IntVar(&checksumBlocks, "checksum-blocks", 4, "main.checksumBlock calls per 10 ms tick (its share of the CPU)")
	flag.BoolVar(&hashLoopOn, "hashloop", false, "also run main.workloadHashLoop (a second caller of crypto/sha256)")
	flag.IntVar(&hashLoopCalls, "hashloop-calls", 8, "sha256.Sum256 calls of main.workloadHashLoop per 10 ms tick")
	flag.DurationVar(&hashLoopMoreAfter, "hashloop-more-after", 0, "from this long after start on, main.workloadHashLoop makes more calls per tick (0: never)")
	flag.IntVar(&hashLoopFactor, "hashloop-factor", 3, "how many times the calls main.workloadHashLoop makes once it makes more")
	flag.DurationVar(&leakAfter, "leak-after", 0, "from this long after start on, main.leakyCache leaks -leak-rate bytes per second (0: never)")
	flag.IntVar(&leakRate, "leak-rate", 1<<20, "bytes per second main.leakyCache allocates and keeps once leaking")
	flag.Parse()
	started = time.Now()

	runtime.SetBlockProfileRate(1)
	runtime.SetMutexProfileFraction(1)

	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()

	var err error
	if *outDir != "" {
		err = dump(ctx, *outDir, *duration)
	} else {
		err = serve(ctx, *listen, *portFile)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gotarget:", err)
		os.Exit(1)
	}
}

// serve runs the workload and serves net/http/pprof until ctx is cancelled.
func serve(ctx context.Context, addr, portFile string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	actual := ln.Addr().String()

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", httppprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", httppprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", httppprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", httppprof.Trace)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	// The runtime's own allocation counters: the independent truth for the
	// collector's alloc_space deltas (the heap profile is a sampled estimate
	// of the same allocations, as of the last completed GC).
	mux.HandleFunc("/debug/stats", func(w http.ResponseWriter, r *http.Request) {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]uint64{
			"total_alloc_bytes": ms.TotalAlloc,
			"mallocs":           ms.Mallocs,
			"num_gc":            uint64(ms.NumGC),
			"pid":               uint64(os.Getpid()),
		})
	})
	// No WriteTimeout: /debug/pprof/profile?seconds=N legitimately takes N seconds.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	stopLoad := startWorkload()
	defer stopLoad()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	if portFile != "" {
		if err := writeFileAtomic(portFile, []byte(actual+"\n")); err != nil {
			srv.Close()
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "gotarget: pid %d serving http://%s/debug/pprof/\n", os.Getpid(), actual)

	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	fmt.Fprintln(os.Stderr, "gotarget: signal received, shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close() // an in-flight CPU profile request may outlast the grace period
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// dump runs the workload for d (or until ctx is cancelled) while CPU
// profiling, then writes all profiles into dir.
func dump(ctx context.Context, dir string, d time.Duration) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cpuPath := filepath.Join(dir, "cpu.pb.gz")
	cpuTmp, err := os.CreateTemp(dir, ".cpu.pb.gz.tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(cpuTmp.Name()) // no-op after a successful rename
	if err := cpuTmp.Chmod(0o644); err != nil {
		cpuTmp.Close()
		return err
	}
	if err := pprof.StartCPUProfile(cpuTmp); err != nil {
		cpuTmp.Close()
		return err
	}

	stopLoad := startWorkload()
	defer stopLoad()

	timer := time.NewTimer(d)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
		fmt.Fprintln(os.Stderr, "gotarget: signal received, writing profiles early")
	}

	pprof.StopCPUProfile()
	if err := cpuTmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(cpuTmp.Name(), cpuPath); err != nil {
		return err
	}

	// Written while the workload is still running, so the goroutine profile
	// shows the parked workers. GC first so the heap profile is current.
	runtime.GC()
	for _, name := range dumpProfiles {
		p := pprof.Lookup(name)
		if p == nil {
			return fmt.Errorf("no %s profile", name)
		}
		err := writeAtomic(filepath.Join(dir, name+".pb.gz"), func(w io.Writer) error {
			return p.WriteTo(w, 0)
		})
		if err != nil {
			return fmt.Errorf("writing %s profile: %w", name, err)
		}
	}
	fmt.Fprintf(os.Stderr, "gotarget: wrote profiles to %s\n", dir)
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// writeAtomic writes via a temporary file in the same directory and renames
// it into place, so readers never see a partial file.
func writeAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// startWorkload starts every worker goroutine, each under the pprof label
// worker=<name>. The returned function stops them and waits for them.
func startWorkload() (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := func(name string, fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pprof.Do(context.Background(), pprof.Labels("worker", name), func(context.Context) {
				fn()
			})
		}()
	}

	start("hash", func() { hashWork(done) })
	start("json", func() { jsonWork(done) })
	start("sort", func() { sortWork(done) })
	start("alloc", func() { allocWork(done) })

	shared := &sharedState{counts: make(map[int]int)}
	for i := 0; i < numContenders; i++ {
		id := i
		start("contended", func() { contendedWork(done, shared, id) })
	}

	ch := make(chan int)
	start("blocked-producer", func() { blockedProducer(done, ch) })
	for i := 0; i < numBlocked; i++ {
		start("blocked", func() { blockedWork(ch) })
	}

	for i := 0; i < numParked; i++ {
		id := i
		start("parked", func() { parkedWorker(done, id) })
	}
	if checksumOn {
		start("checksum", func() { checksumWork(done) })
	}
	if hashLoopOn {
		start("hashloop", func() { workloadHashLoop(done) })
	}
	if leakAfter > 0 {
		start("leak", func() { leakWork(done) })
	}

	var once sync.Once
	return func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
}

// idle sleeps for d, returning false if the workload is being stopped. It
// sleeps rather than selecting on a timer so that idling does not show up in
// the block profile.
func idle(done <-chan struct{}, d time.Duration) bool {
	time.Sleep(d)
	select {
	case <-done:
		return false
	default:
		return true
	}
}

// fill writes a deterministic byte pattern derived from seed.
func fill(b []byte, seed uint64) {
	x := seed*0x9E3779B97F4A7C15 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
}

var sink uint64 // defeats dead-code elimination of results; updated atomically

//go:noinline
func hashWork(done <-chan struct{}) {
	buf := make([]byte, 64<<10)
	fill(buf, 1)
	var acc uint64
	for {
		end := time.Now().Add(hashDuty[0])
		for time.Now().Before(end) {
			sum := sha256.Sum256(buf)
			buf[int(sum[0])] ^= sum[1] // chain the hashes
			acc += uint64(sum[2])
		}
		atomic.AddUint64(&sink, acc)
		if !idle(done, hashDuty[1]) {
			return
		}
	}
}

type jsonRecord struct {
	ID     int               `json:"id"`
	Name   string            `json:"name"`
	Tags   []string          `json:"tags"`
	Values []float64         `json:"values"`
	Attrs  map[string]string `json:"attrs"`
	Nested *jsonRecord       `json:"nested,omitempty"`
}

func makeRecords(n int) []jsonRecord {
	recs := make([]jsonRecord, n)
	for i := range recs {
		r := &recs[i]
		r.ID = i
		r.Name = "record-" + strconv.Itoa(i)
		r.Tags = []string{"alpha", "beta", "tag" + strconv.Itoa(i%7)}
		r.Values = make([]float64, 16)
		for j := range r.Values {
			r.Values[j] = float64(i*j) / 3.0
		}
		r.Attrs = map[string]string{"region": "r" + strconv.Itoa(i%3), "service": "svc" + strconv.Itoa(i%5)}
		r.Nested = &jsonRecord{ID: -i, Name: "child", Tags: []string{"c"}}
	}
	return recs
}

//go:noinline
func jsonWork(done <-chan struct{}) {
	recs := makeRecords(200)
	for {
		end := time.Now().Add(jsonDuty[0])
		for time.Now().Before(end) {
			data, err := json.Marshal(recs)
			if err != nil {
				panic(err)
			}
			var out []jsonRecord
			if err := json.Unmarshal(data, &out); err != nil {
				panic(err)
			}
			atomic.AddUint64(&sink, uint64(len(out)+len(data)))
		}
		if !idle(done, jsonDuty[1]) {
			return
		}
	}
}

//go:noinline
func sortWork(done <-chan struct{}) {
	ints := make([]int, 20000)
	strs := make([]string, 2000)
	x := uint64(42)
	next := func() uint64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		return x
	}
	for i := range strs {
		strs[i] = strconv.FormatUint(next(), 36)
	}
	for {
		end := time.Now().Add(sortDuty[0])
		for time.Now().Before(end) {
			for i := range ints {
				ints[i] = int(next() >> 1)
			}
			sort.Ints(ints)
			sort.Slice(strs, func(i, j int) bool { return strs[i] > strs[j] })
			sort.Strings(strs)
			atomic.AddUint64(&sink, uint64(ints[0]))
		}
		if !idle(done, sortDuty[1]) {
			return
		}
	}
}

// allocRing holds allocWork's retained buffers. It is a package variable so
// the buffers stay reachable (a never-read local slice could be treated as
// dead by the compiler and collected).
var allocRing [allocRingSize][]byte

// allocWork allocates buffers of varying size at a steady rate and keeps the
// most recent allocRingSize of them alive (about 8 MiB), so the heap profile
// has non-zero inuse_space as well as alloc_space.
//
//go:noinline
func allocWork(done <-chan struct{}) {
	n := 0
	for {
		for i := 0; i < allocsPerTick; i++ {
			size := 1<<10 + (n%64)<<10 // 1 KiB .. 64 KiB, cycling
			b := make([]byte, size)
			for j := 0; j < len(b); j += 512 {
				b[j] = byte(n + j)
			}
			allocRing[n%allocRingSize] = b
			n++
		}
		if !idle(done, allocTick) {
			return
		}
	}
}

type sharedState struct {
	mu     sync.Mutex
	acc    uint64
	counts map[int]int
}

// contendedWork repeatedly takes a mutex shared with the other contenders
// and holds it for a short computation, producing mutex and block profile
// contention.
//
//go:noinline
func contendedWork(done <-chan struct{}, s *sharedState, id int) {
	for {
		for i := 0; i < contendedBurst; i++ {
			s.mu.Lock()
			x := s.acc | 1
			for j := 0; j < contendedSpin; j++ {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
			}
			s.acc = x
			s.counts[id]++
			s.mu.Unlock()
		}
		if !idle(done, contendedPause) {
			return
		}
	}
}

// blockedProducer feeds blockedWork slowly, so its receivers spend most of
// their time blocked in a channel receive.
//
//go:noinline
func blockedProducer(done <-chan struct{}, ch chan<- int) {
	defer close(ch)
	for i := 0; idle(done, blockedTick); i++ {
		select {
		case <-done:
			return
		case ch <- i:
		}
	}
}

//go:noinline
func blockedWork(ch <-chan int) {
	for {
		v, ok := <-ch
		if !ok {
			return
		}
		atomic.AddUint64(&sink, uint64(v))
	}
}

// parkedWorker just waits; the goroutine profile shows numParked of these.
//
//go:noinline
func parkedWorker(done <-chan struct{}, id int) {
	<-done
	_ = id
}

//go:noinline
func checksumWork(done <-chan struct{}) {
	buf := make([]byte, checksumBlockBytes)
	fill(buf, 7)
	var acc uint64
	for {
		rounds := 1
		if checksumSlowAfter > 0 && time.Since(started) >= checksumSlowAfter {
			rounds = checksumSlowFactor
		}
		for i := 0; i < checksumBlocks; i++ {
			acc += checksumBlock(buf, rounds)
		}
		atomic.AddUint64(&sink, acc)
		if !idle(done, checksumTick) {
			return
		}
	}
}

// checksumBlock is a leaf: all of its CPU time is its own (flat).
//
//go:noinline
func checksumBlock(buf []byte, rounds int) uint64 {
	h := uint64(1469598103934665603)
	for r := 0; r < rounds; r++ {
		for _, b := range buf {
			h ^= uint64(b)
			h *= 1099511628211
		}
	}
	return h
}

// workloadHashLoop hashes a fixed number of times per tick (count-based, like
// checksumWork), through the same sha256 code as hashWork.
//
//go:noinline
func workloadHashLoop(done <-chan struct{}) {
	buf := make([]byte, hashLoopBytes)
	fill(buf, 11)
	var acc uint64
	for {
		calls := hashLoopCalls
		if hashLoopMoreAfter > 0 && time.Since(started) >= hashLoopMoreAfter {
			calls *= hashLoopFactor
		}
		for i := 0; i < calls; i++ {
			sum := sha256.Sum256(buf)
			buf[int(sum[0])] ^= sum[1] // chain the hashes
			acc += uint64(sum[2])
		}
		atomic.AddUint64(&sink, acc)
		if !idle(done, hashLoopTick) {
			return
		}
	}
}

// leaked holds every buffer leakyCache ever made: reachable for the life of
// the process, so the garbage collector can never free them. Only leakWork's
// goroutine touches it.
var leaked [][]byte

// leakWork waits for -leak-after, then calls leakyCache every tick with the
// bytes due by then (so the rate holds however late the ticks run).
//
//go:noinline
func leakWork(done <-chan struct{}) {
	for time.Since(started) < leakAfter {
		if !idle(done, leakTick) {
			return
		}
	}
	begin := time.Now()
	var made int64
	for {
		due := int64(time.Since(begin).Seconds() * float64(leakRate))
		for ; made+leakChunk <= due; made += leakChunk {
			leakyCache(made)
		}
		if !idle(done, leakTick) {
			return
		}
	}
}

// leakyCache is the leak's allocation site: one leakChunk buffer, written
// through (so its pages are real, not untouched zero pages) and kept forever.
//
//go:noinline
func leakyCache(seq int64) {
	b := make([]byte, leakChunk)
	for i := 0; i < len(b); i += 256 {
		b[i] = byte(seq>>8) + byte(i)
	}
	leaked = append(leaked, b)
}
