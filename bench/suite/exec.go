package suite

import "os/exec"

var execCommand = exec.Command
