package e2ee

import (
	"encoding/json"
	"testing"

	"github.com/tidwall/gjson"
	"maunium.net/go/mautrix/id"
)

// crossSigning is a user's set of cross-signing keys.
type crossSigning struct {
	user                     id.UserID
	master, selfSig, userSig *signer
}

func newCrossSigning(t testing.TB, user id.UserID) *crossSigning {
	return &crossSigning{user: user, master: newSigner(t), selfSig: newSigner(t), userSig: newSigner(t)}
}

// key returns the public key object of one of the keys, signed by the master
// key unless it is the master key.
func (c *crossSigning) key(t testing.TB, typ string) map[string]any {
	k := map[string]*signer{keyTypeMaster: c.master, keyTypeSelfSigning: c.selfSig, keyTypeUserSigning: c.userSig}[typ]
	obj := map[string]any{"user_id": string(c.user), "usage": []string{typ}, "keys": map[string]any{"ed25519:" + k.pub: k.pub}}
	if typ != keyTypeMaster {
		c.master.sign(t, obj, c.user, c.master.pub)
	}
	return obj
}

func (c *crossSigning) upload(t testing.TB) *CrossSigningUpload {
	return &CrossSigningUpload{
		MasterKey:      mustJSON(t, c.key(t, keyTypeMaster)),
		SelfSigningKey: mustJSON(t, c.key(t, keyTypeSelfSigning)),
		UserSigningKey: mustJSON(t, c.key(t, keyTypeUserSigning)),
	}
}

func (e *env) storeCrossSigning(c *crossSigning, authed bool) error {
	e.t.Helper()
	ks, err := ValidateCrossSigningKeys(c.user, c.upload(e.t))
	if err != nil {
		return err
	}
	return e.s.StoreCrossSigningKeys(e.ctx, ks, authed)
}

func TestCrossSigningUpload(t *testing.T) {
	alice := uid("alice")
	forEachEnv(t, func(t *testing.T, e *env) {
		cs := newCrossSigning(t, alice)
		// A self-signing key signed by another key is refused.
		bad := cs.upload(t)
		other := newCrossSigning(t, alice)
		bad.SelfSigningKey = mustJSON(t, other.key(t, keyTypeSelfSigning))
		ks, err := ValidateCrossSigningKeys(alice, bad)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.s.StoreCrossSigningKeys(e.ctx, ks, false); errcode(err) != "M_INVALID_SIGNATURE" {
			t.Fatalf("badly signed self-signing key: %v", err)
		}
		// Without any master key, nothing can be checked.
		ks, err = ValidateCrossSigningKeys(alice, &CrossSigningUpload{SelfSigningKey: mustJSON(t, cs.key(t, keyTypeSelfSigning))})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.s.StoreCrossSigningKeys(e.ctx, ks, false); errcode(err) != "M_MISSING_PARAM" {
			t.Fatalf("no master key: %v", err)
		}
		// Shape errors.
		for name, up := range map[string]*CrossSigningUpload{
			"wrong usage": {MasterKey: mustJSON(t, map[string]any{"user_id": string(alice), "usage": []string{"self_signing"}, "keys": map[string]any{"ed25519:" + cs.master.pub: cs.master.pub}})},
			"other user":  {MasterKey: mustJSON(t, map[string]any{"user_id": "@bob:hs.test", "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + cs.master.pub: cs.master.pub}})},
			"two keys":    {MasterKey: mustJSON(t, map[string]any{"user_id": string(alice), "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + cs.master.pub: cs.master.pub, "ed25519:x": "x"}})},
		} {
			if _, err := ValidateCrossSigningKeys(alice, up); errcode(err) != "M_INVALID_PARAM" {
				t.Fatalf("%s: %v", name, err)
			}
		}

		// The first upload needs no auth; the same keys again neither.
		if err := e.storeCrossSigning(cs, false); err != nil {
			t.Fatal(err)
		}
		ks, _ = ValidateCrossSigningKeys(alice, cs.upload(t))
		if needs, err := e.s.CrossSigningNeedsAuth(e.ctx, ks); err != nil || needs {
			t.Fatalf("same keys again need auth: %v %v", needs, err)
		}
		// New keys do.
		cs2 := newCrossSigning(t, alice)
		ks2, _ := ValidateCrossSigningKeys(alice, cs2.upload(t))
		if needs, err := e.s.CrossSigningNeedsAuth(e.ctx, ks2); err != nil || !needs {
			t.Fatalf("replacing keys needs no auth: %v %v", needs, err)
		}
		if err := e.s.StoreCrossSigningKeys(e.ctx, ks2, false); err != ErrCrossSigningAuthRequired {
			t.Fatalf("replacing without auth: %v", err)
		}

		res, err := e.s.QueryLocalKeys(e.ctx, alice, map[id.UserID][]id.DeviceID{alice: nil})
		if err != nil {
			t.Fatal(err)
		}
		if gjson.GetBytes(res.MasterKeys[alice], "keys.ed25519:"+cs.master.pub).Str != cs.master.pub ||
			res.SelfSigningKeys[alice] == nil || res.UserSigningKeys[alice] == nil {
			t.Fatalf("own query: %+v", res)
		}
		// Others do not see the user-signing key.
		res, err = e.s.QueryLocalKeys(e.ctx, uid("bob"), map[id.UserID][]id.DeviceID{alice: nil})
		if err != nil || res.UserSigningKeys[alice] != nil || res.MasterKeys[alice] == nil {
			t.Fatalf("bob's query: %+v %v", res, err)
		}
	})
}

func TestSignatureUploadValidation(t *testing.T) {
	alice, bob := uid("alice"), uid("bob")
	forEachEnv(t, func(t *testing.T, e *env) {
		acs, bcs := newCrossSigning(t, alice), newCrossSigning(t, bob)
		if err := e.storeCrossSigning(acs, false); err != nil {
			t.Fatal(err)
		}
		if err := e.storeCrossSigning(bcs, false); err != nil {
			t.Fatal(err)
		}
		dev := newDevice(t, alice, "ADEV")
		e.upload(dev, nil, nil)

		ownDevice := func(by *signer) map[string]any { return by.sign(t, dev.keys(t), alice, by.pub) }
		masterByDevice := func() map[string]any {
			return dev.key.sign(t, acs.key(t, keyTypeMaster), alice, string(dev.id))
		}
		bobMaster := func(by *signer) map[string]any { return by.sign(t, bcs.key(t, keyTypeMaster), alice, by.pub) }
		forged := newSigner(t)

		tests := []struct {
			name    string
			target  id.UserID
			keyID   string
			obj     map[string]any
			errcode string
		}{
			{"own device by self-signing key", alice, "ADEV", ownDevice(acs.selfSig), ""},
			{"own master key by own device", alice, acs.master.pub, masterByDevice(), ""},
			{"bob's master key by user-signing key", bob, bcs.master.pub, bobMaster(acs.userSig), ""},
			{"own device by the wrong key", alice, "ADEV", ownDevice(acs.userSig), "M_INVALID_SIGNATURE"},
			{"bob's master by the self-signing key", bob, bcs.master.pub, bobMaster(acs.selfSig), "M_INVALID_SIGNATURE"},
			{"forged signature", alice, "ADEV", func() map[string]any {
				o := dev.keys(t)
				o["signatures"].(map[string]any)[string(alice)].(map[string]any)["ed25519:"+acs.selfSig.pub] = forged.sign(t, dev.keys(t), alice, "x")["signatures"].(map[string]any)[string(alice)].(map[string]any)["ed25519:x"]
				return o
			}(), "M_INVALID_SIGNATURE"},
			{"object differs from the stored key", alice, "ADEV", func() map[string]any {
				o := dev.keys(t)
				o["algorithms"] = []string{"evil"}
				return acs.selfSig.sign(t, o, alice, acs.selfSig.pub)
			}(), "M_INVALID_PARAM"},
			{"unknown device", alice, "NODEV", ownDevice(acs.selfSig), "M_NOT_FOUND"},
			{"no new signature", alice, "ADEV", dev.keys(t), "M_INVALID_SIGNATURE"},
			{"remote user", "@eve:elsewhere", "key", map[string]any{}, "M_NOT_FOUND"},
		}
		body := map[id.UserID]map[string]json.RawMessage{}
		for _, tc := range tests {
			// Each case on its own, then all together in one request.
			t.Run(tc.name, func(t *testing.T) {
				fails, err := e.s.UploadSignatures(e.ctx, alice, map[id.UserID]map[string]json.RawMessage{tc.target: {tc.keyID: mustJSON(t, tc.obj)}})
				if err != nil {
					t.Fatal(err)
				}
				got := ""
				if f := fails[tc.target][tc.keyID]; f != nil {
					got = f.ErrCode
				}
				if got != tc.errcode {
					t.Fatalf("failure = %q, want %q (%v)", got, tc.errcode, fails[tc.target][tc.keyID])
				}
			})
			if tc.errcode == "" {
				if body[tc.target] == nil {
					body[tc.target] = map[string]json.RawMessage{}
				}
				body[tc.target][tc.keyID] = mustJSON(t, tc.obj)
			}
		}
		if fails, err := e.s.UploadSignatures(e.ctx, alice, body); err != nil || len(fails) != 0 {
			t.Fatalf("valid batch: %v %v", fails, err)
		}

		// Alice sees her self-signing key's signature on her device, her
		// device's on her master key, and her user-signing key's on bob's master.
		res, err := e.s.QueryLocalKeys(e.ctx, alice, map[id.UserID][]id.DeviceID{alice: nil, bob: nil})
		if err != nil {
			t.Fatal(err)
		}
		sigPath := func(signer string, key string) string {
			return "signatures." + gjson.Escape(string(alice)) + "." + gjson.Escape("ed25519:"+key)
		}
		devKeys := res.DeviceKeys[alice]["ADEV"]
		if !gjson.GetBytes(devKeys, sigPath("", acs.selfSig.pub)).Exists() || !verifySigned(devKeys, alice, acs.selfSig.pub, acs.selfSig.pub) {
			t.Fatalf("device keys lack the self-signing signature: %s", devKeys)
		}
		if !verifySigned(res.MasterKeys[alice], alice, string(dev.id), dev.key.pub) {
			t.Fatalf("master key lacks the device signature: %s", res.MasterKeys[alice])
		}
		if !verifySigned(res.MasterKeys[bob], alice, acs.userSig.pub, acs.userSig.pub) {
			t.Fatalf("bob's master key lacks alice's signature: %s", res.MasterKeys[bob])
		}
		// Bob does not see alice's user-signing signature on his key, but does
		// see alice's self-signing signature on her device.
		res, err = e.s.QueryLocalKeys(e.ctx, bob, map[id.UserID][]id.DeviceID{alice: nil, bob: nil})
		if err != nil {
			t.Fatal(err)
		}
		if gjson.GetBytes(res.MasterKeys[bob], sigPath("", acs.userSig.pub)).Exists() {
			t.Fatalf("bob sees alice's user-signing signature: %s", res.MasterKeys[bob])
		}
		if !verifySigned(res.DeviceKeys[alice]["ADEV"], alice, acs.selfSig.pub, acs.selfSig.pub) {
			t.Fatalf("bob does not see alice's device signature")
		}
	})
}
