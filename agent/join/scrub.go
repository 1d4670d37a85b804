package join

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	yaml "go.yaml.in/yaml/v3"

	"berth.dev/berth/internal/node/atomicfile"
	"berth.dev/berth/internal/node/bootstraptoken"
)

// scrubProblem is a drop-in the scrub could not read, parse or rewrite.
type scrubProblem struct {
	path string
	err  error
}

// scrubTokens removes spec.controlPlane.discovery.token from every drop-in that has one, keeping the rest of the
// file (comments included) and its mode. A .json drop-in comes back as YAML, which the loader reads the same. The
// merged config stays valid: a joined node needs no token. Hidden files are skipped, as the config loader skips
// them. A drop-in it cannot handle is reported and the others are still scrubbed.
func scrubTokens(dir string) (scrubbed []string, problems []scrubProblem) {
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, []scrubProblem{{dir, err}}
	}
	for _, e := range entries {
		ext := filepath.Ext(e.Name())
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		changed, err := scrubFile(p)
		if err != nil {
			problems = append(problems, scrubProblem{p, err})
		} else if changed {
			scrubbed = append(scrubbed, p)
		}
	}
	return scrubbed, problems
}

// scrubFile removes the token from the drop-in at p; changed is false when it holds none.
func scrubFile(p string) (changed bool, err error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return false, err
	}
	out, changed, err := scrubToken(data)
	if err != nil || !changed {
		return false, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return false, err
	}
	return true, atomicfile.Write(p, out, fi.Mode().Perm())
}

// keepNulls spells out the empty null scalars under n (`key:` with no value, `{a, b}`), which the encoder would
// write back as empty strings: the scrub must change nothing but the token.
func keepNulls(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && n.Value == "" && n.ShortTag() == "!!null" {
		n.Value = "null"
	}
	for _, c := range n.Content {
		keepNulls(c)
	}
}

func scrubToken(data []byte) ([]byte, bool, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, false, err
	}
	if len(doc.Content) == 0 {
		return data, false, nil
	}
	m := doc.Content[0]
	for _, key := range []string{"spec", "controlPlane", "discovery"} {
		if m = child(m, key); m == nil {
			return data, false, nil
		}
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "token" {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			keepNulls(&doc)
			var b bytes.Buffer
			enc := yaml.NewEncoder(&b)
			enc.SetIndent(2)
			if err := enc.Encode(&doc); err != nil {
				return nil, false, err
			}
			return b.Bytes(), true, nil
		}
	}
	return data, false, nil
}

func child(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// maxCopySize bounds the files scrubCopies reads whole: user data is at most a few MiB (cloud providers cap it at
// 64 KiB to 16 MiB); a larger file is reported, not read.
const maxCopySize = 32 << 20

// scrubCopies replaces the token's secret with bootstraptoken.ScrubbedSecret in every regular file under dirs
// that holds it: cloud-init's copies of the user data (user-data.txt, its processed .i copy, the cloud-config and
// the pickled datasource obj.pkl, which restores them on the next boot), its seed and run-time data, the Azure
// agent's custom data. The replacement is as long as the secret, so a length-prefixed copy (a pickle) still loads,
// and the token id stays, so an operator sees which token the copy held. Symbolic links are not followed (cloud-init's
// instance link points into the instances directory, which is walked). Mode and owner are kept. A file it cannot
// read or rewrite is reported and the others are still scrubbed.
func scrubCopies(dirs []string, secret string) (scrubbed []string, problems []scrubProblem) {
	if secret == "" {
		return nil, nil
	}
	needle, replacement := []byte(secret), []byte(bootstraptoken.ScrubbedSecret)
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if !os.IsNotExist(err) {
					problems = append(problems, scrubProblem{p, err})
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			changed, err := scrubCopy(p, needle, replacement)
			if err != nil {
				problems = append(problems, scrubProblem{p, err})
			} else if changed {
				scrubbed = append(scrubbed, p)
			}
			return nil
		})
		if err != nil {
			problems = append(problems, scrubProblem{dir, err})
		}
	}
	return scrubbed, problems
}

func scrubCopy(p string, needle, replacement []byte) (bool, error) {
	fi, err := os.Lstat(p)
	if err != nil {
		return false, err
	}
	if fi.Size() > maxCopySize {
		// Not user data (an extension package, a log): scanned, and rewritten never.
		if found, err := holds(p, needle); err != nil || !found {
			return false, err
		}
		return false, fmt.Errorf("holds the token's secret but has %d bytes, more than the %d this scrub rewrites", fi.Size(), maxCopySize)
	}
	data, err := os.ReadFile(p)
	if err != nil || !bytes.Contains(data, needle) {
		return false, err
	}
	if err := atomicfile.Write(p, bytes.ReplaceAll(data, needle, replacement), fi.Mode().Perm()); err != nil {
		return false, err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && (st.Uid != 0 || st.Gid != 0) {
		if err := os.Lchown(p, int(st.Uid), int(st.Gid)); err != nil {
			return true, err
		}
	}
	return true, nil
}

// holds reports whether the file at p contains needle, reading it in chunks.
func holds(p string, needle []byte) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20+len(needle))
	kept := 0 // the previous chunk's tail, so a needle across two reads is found
	for {
		n, err := io.ReadFull(f, buf[kept:])
		if bytes.Contains(buf[:kept+n], needle) {
			return true, nil
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		kept = copy(buf, buf[kept+n-(len(needle)-1):kept+n])
	}
}
