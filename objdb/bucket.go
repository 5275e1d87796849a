package objdb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// History is how many revisions of each key the bucket keeps: a copy
// whose feed was lost resumes after its last revision and so sees every
// change of a key made meanwhile, up to the last History of them (the
// older are compacted away; the copy still ends with the latest value).
const History = 64

// How long opening the bucket waits for JetStream. Before JetStream has a
// meta leader — the first second or two of a cluster's start — its API
// does not answer at all (and says "temporarily unavailable" only after
// several seconds): a lookup that waited out a long deadline held every
// layer's start for it (5 s of the 9 s corobus took to serve its first
// client). A lookup is one server's answer, so a short wait, doubled on
// each retry up to maxLookupWait (a loaded machine gets there), finds
// JetStream within a fraction of a second of its being ready. Creating or
// changing the bucket is a decision of the meta group and may take longer
// (createFactor lookups): it is sent only once a lookup was answered.
const (
	firstLookupWait = 250 * time.Millisecond
	maxLookupWait   = 2 * time.Second
	// A creation or update waits createFactor lookups: JetStream may
	// leave one of two concurrent equal creations (two nodes starting)
	// unanswered, and the next attempt's lookup then finds the bucket.
	createFactor = 4
	// retryPause is the pause after an attempt JetStream answered with a
	// refusal (no wait of its own was spent), doubled up to maxRetryPause.
	firstRetryPause = 50 * time.Millisecond
	maxRetryPause   = time.Second
)

// bucketOpener opens the objdb bucket, retrying as JetStream becomes
// ready; one per caller, it remembers how long the last lookup waited.
type bucketOpener struct {
	js       jetstream.JetStream
	bucket   string
	replicas int
	// bind only binds (a Store whose bus user may not change the stream).
	bind bool

	lookup time.Duration
	pause  time.Duration
}

func newBucketOpener(js jetstream.JetStream, bucket string, replicas int, bind bool) *bucketOpener {
	return &bucketOpener{js: js, bucket: bucket, replicas: max(replicas, 1), bind: bind,
		lookup: firstLookupWait, pause: firstRetryPause}
}

// open makes one attempt; the KeyValue it returns may have fewer replicas
// than wanted (openBucket).
func (o *bucketOpener) open(ctx context.Context) (jetstream.KeyValue, int, error) {
	var kv jetstream.KeyValue
	var got int
	var err error
	if o.bind {
		cctx, cancel := context.WithTimeout(ctx, o.lookup)
		kv, err = o.js.KeyValue(cctx, o.bucket)
		cancel()
		got = o.replicas
	} else {
		kv, got, err = openBucket(ctx, o.js, o.bucket, o.replicas, o.lookup)
	}
	if err == nil {
		o.lookup, o.pause = firstLookupWait, firstRetryPause
		return kv, got, nil
	}
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		// No answer in time: JetStream not ready yet, or slow.
		o.lookup = min(2*o.lookup, maxLookupWait)
	}
	return nil, 0, err
}

// wait is open retried until it succeeds or ctx ends; onRetry (may be nil)
// hears of every failed attempt, numbered from 0.
func (o *bucketOpener) wait(ctx context.Context, onRetry func(attempt int, err error)) (jetstream.KeyValue, int, error) {
	for attempt := 0; ; attempt++ {
		started := time.Now()
		kv, got, err := o.open(ctx)
		if err == nil {
			return kv, got, nil
		}
		if ctx.Err() != nil {
			return nil, 0, err
		}
		if onRetry != nil {
			onRetry(attempt, err)
		}
		// An attempt that spent its wait is retried at once; one that was
		// refused quickly after a pause.
		if time.Since(started) < o.pause {
			select {
			case <-ctx.Done():
				return nil, 0, err
			case <-time.After(o.pause):
			}
			o.pause = min(2*o.pause, maxRetryPause)
		}
	}
}

// openBucket creates the objdb bucket, or binds to it (raising an older
// bucket's history to History, and its replicas to replicas). lookup
// bounds the lookup of the bucket; its creation or update may take
// createFactor times that. It returns the bucket's replicas.
//
// An existing bucket that needs no change is bound, not updated: an update
// rewrites the stream's metadata, which a full disk refuses, and a node
// restarted on a full disk must still open its store and serve reads.
//
// A bucket is created with fewer replicas than asked when the JetStream
// cluster has fewer servers than that: a fresh three-node cluster of which
// two nodes run (quorate, as corosync is with two of three) gets an R2
// bucket, raised to R3 once the third node has joined (Keeper's
// raiseReplicas, or the next openBucket). An existing bucket with fewer
// replicas than asked is bound as it is when it cannot be raised yet.
func openBucket(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, lookup time.Duration) (jetstream.KeyValue, int, error) {
	lctx, cancel := context.WithTimeout(ctx, lookup)
	defer cancel()
	var have jetstream.KeyValue
	haveReplicas := 0
	kv, err := js.KeyValue(lctx, bucket)
	switch {
	case err == nil:
		st, err := kv.Status(lctx)
		if err != nil {
			return nil, 0, fmt.Errorf("objdb bucket %s: status: %w", bucket, err)
		}
		bs, ok := st.(*jetstream.KeyValueBucketStatus)
		if !ok {
			return nil, 0, fmt.Errorf("objdb bucket %s: unexpected status %T", bucket, st)
		}
		haveReplicas = bs.StreamInfo().Config.Replicas
		if bs.History() >= History && haveReplicas == replicas {
			return kv, replicas, nil
		}
		if bs.History() >= History && haveReplicas < replicas {
			have = kv
		}
	case !errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, createFactor*lookup)
	defer cancel()
	for r := replicas; ; r-- {
		kv, err := js.CreateOrUpdateKeyValue(cctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "corobus object database",
			History:     History,
			Replicas:    r,
			Storage:     jetstream.FileStorage,
		})
		if err == nil {
			return kv, r, nil
		}
		if !tooFewPeers(err) {
			return nil, 0, err
		}
		if have != nil {
			// It serves as it is; more replicas once more servers run.
			return have, haveReplicas, nil
		}
		if r <= 2 {
			return nil, 0, err
		}
	}
}

// tooFewPeers reports whether JetStream refused a stream for lack of
// servers to place its replicas on.
func tooFewPeers(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	// 10005: no suitable peers for placement; 10023: insufficient
	// resources (a scale-up with too few servers).
	return apiErr.ErrorCode == 10005 || apiErr.ErrorCode == 10023
}
