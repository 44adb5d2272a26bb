package tests

// childEnv makes the test binary run a daemon in-process (see crash_test.go).
const childEnv = "CUSTODIAN_TEST_CHILD"

func runChildDaemon() int { return 2 }
