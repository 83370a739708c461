package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"
)

// serviceKeyFile is the name of the generated service key in the data
// directory of an embedded deployment.
const serviceKeyFile = "service.nk"

// loadServiceKey reads the service's nkeys server seed (SN…) from path. With
// generate set and no file there, it creates one with a fresh key (mode
// 0600, directory 0700). A key file that group or others may read is
// refused: whoever holds the seed can sign replies and audit entries in
// the service's name.
func loadServiceKey(path string, generate bool) (nkeys.KeyPair, error) {
	info, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) && generate {
		kp, err := nkeys.CreateServer()
		if err != nil {
			return nil, err
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("service key: %w", err)
		}
		// O_EXCL: never overwrite a key another process just wrote.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return loadServiceKey(path, false)
		}
		if err != nil {
			return nil, fmt.Errorf("service key: %w", err)
		}
		_, werr := f.Write(append(seed, '\n'))
		if err := errors.Join(werr, f.Close()); err != nil {
			return nil, fmt.Errorf("service key %s: %w", path, err)
		}
		return kp, nil
	}
	if err != nil {
		return nil, fmt.Errorf("service key: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("service key %s is readable by group or others (mode %04o): chmod 600 it", path, info.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("service key: %w", err)
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(data))
	if err != nil {
		// The error of FromSeed never echoes the seed; still, say only
		// which file is wrong.
		return nil, fmt.Errorf("service key %s: not an nkeys seed", path)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicServerKey(pub) {
		return nil, fmt.Errorf("service key %s: want an nkeys server seed (SN…)", path)
	}
	return kp, nil
}

// setServiceKey loads --service-key into the service configuration. A
// single embedded server generates its key in the data directory; a cluster
// node or a replica joining a deployment must be given the shared key file,
// or it runs with an ephemeral key (logged as a warning by the service)
// that clients pinning the deployment's key will refuse.
func setServiceKey(cfg *Config, embedded bool) error {
	path, generate := cfg.ServiceKey, false
	if path == "" && embedded && cfg.Routes == "" {
		path, generate = filepath.Join(cfg.DataDir, serviceKeyFile), true
	}
	if path == "" {
		return nil
	}
	kp, err := loadServiceKey(path, generate)
	if err != nil {
		return err
	}
	cfg.Service.ServiceKey = kp
	if cfg.PreviousServiceKey != "" {
		prev, err := loadServiceKey(cfg.PreviousServiceKey, false)
		if err != nil {
			return fmt.Errorf("--previous-service-key: %w", err)
		}
		cfg.Service.PreviousServiceKey = prev
	}
	return nil
}
