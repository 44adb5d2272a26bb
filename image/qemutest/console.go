package qemutest

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Prompt is what the operator's console prints when it waits for a line.
const Prompt = "custodian> "

// Console drives the operator's console that the appliance's root init
// serves on the serial port: a line per command, "[exit N]" after each,
// then the prompt; put and get move files in base64 lines ended by ".".
type Console struct {
	m     *Machine
	limit time.Duration // per command
}

// Console waits up to boot for the console's first prompt. Each command
// then has limit to finish.
func (m *Machine) Console(boot, limit time.Duration) (*Console, error) {
	if _, err := m.WaitFor(Prompt, boot); err != nil {
		return nil, err
	}
	return &Console{m: m, limit: limit}, nil
}

var exitLine = regexp.MustCompile(`\[exit (\d+)\]\n`)

// Run sends one command line and returns what it printed (without the
// console's echo of the line, if it echoes) and its exit status.
func (c *Console) Run(line string) (string, int, error) {
	if strings.ContainsAny(line, "\r\n") {
		return "", 0, fmt.Errorf("a console command is one line: %q", line)
	}
	if err := c.m.Write(line + "\n"); err != nil {
		return "", 0, err
	}
	return c.result(line)
}

// result reads a command's output up to its exit line and the next prompt.
func (c *Console) result(echo string) (string, int, error) {
	var out string
	var code int
	err := c.m.wait(c.limit, func(unread []byte) (int, bool) {
		loc := exitLine.FindSubmatchIndex(unread)
		if loc == nil || !bytes.HasPrefix(unread[loc[1]:], []byte(Prompt)) {
			return 0, false
		}
		out = string(unread[:loc[0]])
		code, _ = strconv.Atoi(string(unread[loc[2]:loc[3]]))
		return loc[1] + len(Prompt), true
	})
	if err != nil {
		return "", 0, fmt.Errorf("console command %q: %w", echo, err)
	}
	out = strings.TrimPrefix(out, echo+"\n")
	return out, code, nil
}

// MustRun is Run that fails the test unless the command exits 0.
func (c *Console) MustRun(line string) string {
	c.m.t.Helper()
	out, code, err := c.Run(line)
	if err != nil {
		c.m.t.Fatal(err)
	}
	if code != 0 {
		c.m.t.Fatalf("console command %q: exit %d\n%s", line, code, out)
	}
	return out
}

// Put writes data to transfer/NAME on the appliance.
func (c *Console) Put(name string, data []byte) error {
	var b strings.Builder
	b.WriteString("put " + name + "\n")
	encoded := base64.StdEncoding.EncodeToString(data)
	for len(encoded) > 76 {
		b.WriteString(encoded[:76] + "\n")
		encoded = encoded[76:]
	}
	if encoded != "" {
		b.WriteString(encoded + "\n")
	}
	b.WriteString(".\n")
	if err := c.m.Write(b.String()); err != nil {
		return err
	}
	out, code, err := c.result("put " + name)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("put %s: exit %d\n%s", name, code, out)
	}
	return nil
}

// Get reads transfer/NAME from the appliance.
func (c *Console) Get(name string) ([]byte, error) {
	out, code, err := c.Run("get " + name)
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, fmt.Errorf("get %s: exit %d\n%s", name, code, out)
	}
	body, ok := strings.CutSuffix(out, ".\n")
	if !ok {
		return nil, fmt.Errorf("get %s: the output does not end with a line \".\":\n%s", name, out)
	}
	data, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(body, "\n", ""))
	if err != nil {
		return nil, fmt.Errorf("get %s: %w\n%s", name, err, out)
	}
	return data, nil
}

// MustPut and MustGet are Put and Get that fail the test.
func (c *Console) MustPut(name string, data []byte) {
	c.m.t.Helper()
	if err := c.Put(name, data); err != nil {
		c.m.t.Fatal(err)
	}
}

func (c *Console) MustGet(name string) []byte {
	c.m.t.Helper()
	data, err := c.Get(name)
	if err != nil {
		c.m.t.Fatal(err)
	}
	return data
}
