"""The collector: scheduled scraping of pprof endpoints, deltas for cumulative types, target health."""
