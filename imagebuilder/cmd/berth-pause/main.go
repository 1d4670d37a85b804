// Command berth-pause is the pod sandbox ("pause") process of berth's pause image: it holds the pod's
// namespaces, reaps zombies (it is PID 1 of the pod), and exits on SIGTERM or SIGINT.
//
//	berth-pause                  the sandbox process (the image's entrypoint, run without arguments)
//	berth-pause image -o FILE    write the pause image (berth.dev/pause, this very binary as /pause) as an OCI
//	                             image-layout tarball, for the image builder's images list
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"berth.dev/berth/imagebuilder/pauseimage"
)

const usage = "usage: berth-pause            (the pod sandbox process)\n       berth-pause image -o FILE   (write the pause image as an OCI tarball)\n"

func main() {
	switch {
	case len(os.Args) == 1:
		pause()
	case len(os.Args) == 4 && os.Args[1] == "image" && os.Args[2] == "-o":
		self, err := os.Executable()
		if err == nil {
			_, err = pauseimage.Write(os.Args[3], self)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "berth-pause:", err)
			os.Exit(1)
		}
		fmt.Println(os.Args[3])
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(64)
	}
}

func pause() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
