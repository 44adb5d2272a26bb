//go:build !linux

package main

// initRole: the appliance's init roles exist on Linux only.
func initRole() func() { return nil }
