package escrow

// ObserveShares calls f with each share a ceremony makes, until the
// returned function is called.
func ObserveShares(f func(index int, value []byte)) (stop func()) {
	testHookShare = f
	return func() { testHookShare = nil }
}
