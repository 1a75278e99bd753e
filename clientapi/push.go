package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"sync"

	"github.com/gorilla/mux"
	"maunium.net/go/mautrix/id"

	"hearth/clientapi/pushrules"
	"hearth/httputil"
)

// registerPushRuleRoutes serves the push rules API (Client-Server API, "Push
// Rules: API").
func (a *API) registerPushRuleRoutes(r *mux.Router) {
	handle(r, v3R0, "/pushrules/", a.authed(a.getAllPushRules, 0), http.MethodGet)
	handle(r, v3R0, "/pushrules", a.authed(a.getAllPushRules, 0), http.MethodGet)
	handle(r, v3R0, "/pushrules/global/", a.authed(a.getGlobalPushRules, 0), http.MethodGet)
	handle(r, v3R0, "/pushrules/global", a.authed(a.getGlobalPushRules, 0), http.MethodGet)
	rule := "/pushrules/global/{kind}/{ruleId}"
	handle(r, v3R0, rule, a.authed(a.getPushRule, 0), http.MethodGet)
	handle(r, v3R0, rule, a.authed(a.putPushRule, 0), http.MethodPut)
	handle(r, v3R0, rule, a.authed(a.deletePushRule, 0), http.MethodDelete)
	handle(r, v3R0, rule+"/enabled", a.authed(a.getPushRuleEnabled, 0), http.MethodGet)
	handle(r, v3R0, rule+"/enabled", a.authed(a.putPushRuleEnabled, 0), http.MethodPut)
	handle(r, v3R0, rule+"/actions", a.authed(a.getPushRuleActions, 0), http.MethodGet)
	handle(r, v3R0, rule+"/actions", a.authed(a.putPushRuleActions, 0), http.MethodPut)
	a.registerPusherRoutes(r)
}

// pushRuleset returns a user's full rule set (defaults merged with their changes).
func (a *API) pushRuleset(ctx context.Context, localpart string) (*pushrules.Ruleset, error) {
	doc, err := a.accounts.PushRules(ctx, localpart)
	if err != nil {
		return nil, internalErr(err)
	}
	u, err := pushrules.ParseUserRules(doc)
	if err != nil {
		return nil, internalErr(err)
	}
	return u.Ruleset(string(a.userID(localpart)), localpart), nil
}

// PushEvaluator returns the compiled push rules of a local user, for
// notification counting in /sync and for pushers. Evaluators are cached and
// rebuilt after the user changes their rules.
func (a *API) PushEvaluator(ctx context.Context, localpart string) (*pushrules.Evaluator, error) {
	if ev := a.pushRules.get(localpart); ev != nil {
		return ev, nil
	}
	rs, err := a.pushRuleset(ctx, localpart)
	if err != nil {
		return nil, err
	}
	ev := pushrules.NewEvaluator(string(a.userID(localpart)), rs)
	a.pushRules.put(localpart, ev)
	return ev, nil
}

// evaluatorCache holds compiled push rules per user.
type evaluatorCache struct {
	max int
	mu  sync.RWMutex
	m   map[string]*pushrules.Evaluator
}

func newEvaluatorCache(max int) *evaluatorCache {
	return &evaluatorCache{max: max, m: map[string]*pushrules.Evaluator{}}
}

func (c *evaluatorCache) get(localpart string) *pushrules.Evaluator {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[localpart]
}

func (c *evaluatorCache) put(localpart string, ev *pushrules.Evaluator) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			if len(c.m) < c.max*9/10 {
				break
			}
		}
	}
	c.m[localpart] = ev
}

func (c *evaluatorCache) invalidate(localpart string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, localpart)
}

// GET /pushrules/
func (a *API) getAllPushRules(w http.ResponseWriter, r *http.Request, d *Device) error {
	rs, err := a.pushRuleset(r.Context(), d.Localpart)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"global": rs})
	return nil
}

// GET /pushrules/global/
func (a *API) getGlobalPushRules(w http.ResponseWriter, r *http.Request, d *Device) error {
	rs, err := a.pushRuleset(r.Context(), d.Localpart)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, rs)
	return nil
}

// pushRuleParams returns the {kind} and {ruleId} of the path.
func pushRuleParams(r *http.Request) (pushrules.Kind, string, error) {
	v := mux.Vars(r)
	k, ok := pushrules.ParseKind(v["kind"])
	if !ok {
		return "", "", httputil.InvalidParam("Unknown push rule kind %q", v["kind"])
	}
	return k, v["ruleId"], nil
}

// findPushRule looks up one rule of the user's full rule set.
func (a *API) findPushRule(r *http.Request, d *Device) (*pushrules.Rule, error) {
	k, ruleID, err := pushRuleParams(r)
	if err != nil {
		return nil, err
	}
	rs, err := a.pushRuleset(r.Context(), d.Localpart)
	if err != nil {
		return nil, err
	}
	rule := rs.Find(k, ruleID)
	if rule == nil {
		return nil, httputil.NotFound("The push rule was not found")
	}
	return rule, nil
}

// GET /pushrules/global/{kind}/{ruleId}
func (a *API) getPushRule(w http.ResponseWriter, r *http.Request, d *Device) error {
	rule, err := a.findPushRule(r, d)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, rule)
	return nil
}

// GET /pushrules/global/{kind}/{ruleId}/enabled
func (a *API) getPushRuleEnabled(w http.ResponseWriter, r *http.Request, d *Device) error {
	rule, err := a.findPushRule(r, d)
	if err != nil {
		return err
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]bool{"enabled": rule.Enabled})
	return nil
}

// GET /pushrules/global/{kind}/{ruleId}/actions
func (a *API) getPushRuleActions(w http.ResponseWriter, r *http.Request, d *Device) error {
	rule, err := a.findPushRule(r, d)
	if err != nil {
		return err
	}
	acts := rule.Actions
	if acts == nil {
		acts = []pushrules.Action{}
	}
	httputil.RespondJSON(w, http.StatusOK, map[string]any{"actions": acts})
	return nil
}

// parseActionsField decodes a required "actions" property.
func parseActionsField(body map[string]json.RawMessage) ([]pushrules.Action, error) {
	raw, ok := body["actions"]
	if !ok {
		return nil, httputil.MissingParam("Missing actions")
	}
	acts, err := pushrules.ParseActions(raw)
	if err != nil {
		return nil, httputil.BadJSON("actions: %v", err)
	}
	return acts, nil
}

// PUT /pushrules/global/{kind}/{ruleId}
func (a *API) putPushRule(w http.ResponseWriter, r *http.Request, d *Device) error {
	k, ruleID, err := pushRuleParams(r)
	if err != nil {
		return err
	}
	if err := pushrules.ValidateRuleID(ruleID); err != nil {
		return httputil.InvalidParam("%v", err)
	}
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	rule := &pushrules.Rule{Kind: k, RuleID: ruleID}
	if rule.Actions, err = parseActionsField(body); err != nil {
		return err
	}
	if k.HasConditions() {
		if raw, ok := body["conditions"]; ok {
			if err := json.Unmarshal(raw, &rule.Conditions); err != nil {
				return httputil.BadJSON("conditions: %v", err)
			}
		}
	}
	if k == pushrules.Content {
		raw, ok := body["pattern"]
		if !ok {
			return httputil.MissingParam("Content rules need a pattern")
		}
		if err := json.Unmarshal(raw, &rule.Pattern); err != nil {
			return httputil.BadJSON("pattern must be a string")
		}
	}
	q := r.URL.Query()
	return a.changePushRules(w, r, d, func(u *pushrules.UserRules) error {
		return u.Put(rule, q.Get("before"), q.Get("after"))
	})
}

// DELETE /pushrules/global/{kind}/{ruleId}
func (a *API) deletePushRule(w http.ResponseWriter, r *http.Request, d *Device) error {
	k, ruleID, err := pushRuleParams(r)
	if err != nil {
		return err
	}
	return a.changePushRules(w, r, d, func(u *pushrules.UserRules) error { return u.Delete(k, ruleID) })
}

// PUT /pushrules/global/{kind}/{ruleId}/enabled
func (a *API) putPushRuleEnabled(w http.ResponseWriter, r *http.Request, d *Device) error {
	k, ruleID, err := pushRuleParams(r)
	if err != nil {
		return err
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	if body.Enabled == nil {
		return httputil.MissingParam("Missing enabled")
	}
	return a.changePushRules(w, r, d, func(u *pushrules.UserRules) error { return u.SetEnabled(k, ruleID, *body.Enabled) })
}

// PUT /pushrules/global/{kind}/{ruleId}/actions
func (a *API) putPushRuleActions(w http.ResponseWriter, r *http.Request, d *Device) error {
	k, ruleID, err := pushRuleParams(r)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := decodeJSON(r, &body); err != nil {
		return err
	}
	acts, err := parseActionsField(body)
	if err != nil {
		return err
	}
	return a.changePushRules(w, r, d, func(u *pushrules.UserRules) error { return u.SetActions(k, ruleID, acts) })
}

// changePushRules applies a change to the user's stored rules atomically.
func (a *API) changePushRules(w http.ResponseWriter, r *http.Request, d *Device, change func(*pushrules.UserRules) error) error {
	_, err := a.accounts.UpdatePushRules(r.Context(), d.Localpart, func(old []byte) ([]byte, error) {
		u, err := pushrules.ParseUserRules(old)
		if err != nil {
			return nil, err
		}
		if err := change(u); err != nil {
			return nil, err
		}
		return u.Marshal()
	})
	a.pushRules.invalidate(d.Localpart)
	switch {
	case err == nil:
	case errors.Is(err, pushrules.ErrNotFound):
		return httputil.NotFound("The push rule was not found")
	case errors.Is(err, pushrules.ErrRelativeNotFound):
		return httputil.Unknown("%v", err)
	case errors.Is(err, pushrules.ErrReservedRuleID), errors.Is(err, pushrules.ErrBadRuleID), errors.Is(err, pushrules.ErrDefaultRule):
		return httputil.InvalidParam("%v", err)
	case errors.Is(err, pushrules.ErrMissingPattern):
		return httputil.MissingParam("%v", err)
	default:
		return internalErr(err)
	}
	httputil.RespondJSON(w, http.StatusOK, struct{}{})
	return nil
}

// carryOverPushRules gives newRoom, which replaced oldRoom, a local user's push
// rules about oldRoom, when the user joins it: "When a user joins the new room,
// the server should automatically transfer/replicate some of the user's
// personalized settings such as notifications" (Client-Server API, "Room
// Upgrades", "Server behaviour"). It is called by the notification worker for
// every local join in a room with a predecessor, whether the upgrade happened
// here or on another server; rules the user already has for the new room are
// kept. Failures are logged: the join itself has happened.
func (a *API) carryOverPushRules(ctx context.Context, userID id.UserID, oldRoom, newRoom id.RoomID) {
	lp, _, err := userID.Parse()
	if err != nil {
		return
	}
	// Look before writing: most joins have nothing to carry over.
	doc, err := a.accounts.PushRules(ctx, lp)
	if err != nil {
		slog.ErrorContext(ctx, "reading push rules for a room upgrade", "user", userID, "err", err)
		return
	}
	probe, err := pushrules.ParseUserRules(doc)
	if err != nil || !probe.CopyRoomRules(string(oldRoom), string(newRoom)) {
		return
	}
	_, err = a.accounts.UpdatePushRules(ctx, lp, func(old []byte) ([]byte, error) {
		u, err := pushrules.ParseUserRules(old)
		if err != nil {
			return nil, err
		}
		if !u.CopyRoomRules(string(oldRoom), string(newRoom)) {
			return nil, errNoPushRuleChange
		}
		return u.Marshal()
	})
	a.pushRules.invalidate(lp)
	switch {
	case errors.Is(err, errNoPushRuleChange):
		return
	case err != nil:
		slog.ErrorContext(ctx, "copying push rules to an upgraded room", "user", userID, "room", newRoom, "err", err)
		return
	}
	if a.opts.Sync != nil {
		a.opts.Sync.AccountDataChanged(userID)
	}
}

// errNoPushRuleChange rolls back a push rule update that turned out to change
// nothing.
var errNoPushRuleChange = errors.New("push rules unchanged")
