/* spoor's browser script: answers the eS(...) calls a shop's pages already make.
 * Served by spoor at /js/<siteId>.js, followed by the call that starts it with the
 * site's settings. Written to run as it is in current browsers, with nothing to build.
 * Nothing here may throw into the shop's page: every entry point (a call, a timer, a
 * listener, an answer) is guarded, and spoor being down or slow only delays what is
 * sent. */
(function (config) {
  'use strict';

  var win = window;
  var doc = document;
  var PENDING_KEY = 'spoor.pending';
  var IDENTITY_KEY = 'spoor.identity';
  var CONSENT_COOKIE = 'sc_consent';
  /* Bounds on what a browser keeps for later: a visitor offline for a week must not fill
   * its storage; and past a day spoor would no longer know a resend for a retry. */
  var MAX_PENDING_BODIES = 20;
  var MAX_PENDING_BYTES = 200000;
  var PENDING_TTL_MS = 20 * 3600 * 1000;
  /* A body that failed waits twice as long after each failure, up to the cap, and a page
   * resends a few at most: a slow or failing spoor is not met with more and more
   * requests. */
  var FIRST_RETRY_MS = 1000;
  var MAX_RETRY_MS = 10 * 60 * 1000;
  var RESENDS_PER_PAGE = 3;
  var RECOMMENDATIONS_TIMEOUT_MS = 4000;
  /* A browser lets keepalive requests carry 64 KiB in all: a batch stays under it. */
  var MAX_BATCH_EVENTS = 50;
  var MAX_BATCH_BYTES = 48000;
  var FLUSH_DELAY_MS = 50;
  /* Calls kept while the visitor has not yet answered the consent question. */
  var MAX_WAITING_EVENTS = 100;
  var COOKIE_DAYS = 395;
  var IDENTITY_FIELDS = ['externalCustomerId', 'user_email', 'user_phone', 'user_name',
    'user_es_contact_id', 'user_card_id', 'user_city'];
  /* A different one of these is another person (a shared computer): what the tab kept
   * of the previous one is forgotten. */
  var PERSON_FIELDS = ['externalCustomerId', 'user_email', 'user_phone'];
  var PAGE_EVENTS = ['MainPage', 'NotFound', 'StatusCartPage', 'PageView'];
  /* What the tracker takes: anything else is dropped here, with a warning, rather than
   * sent to be refused. */
  var KNOWN_EVENTS = PAGE_EVENTS.concat(['ProductPage', 'StatusCart', 'PurchasedItems',
    'CustomerData', 'CategoryPage', 'AddToWishlist', 'SearchRequest', 'ProductImpressions',
    'ProductImpression', 'ProductUpdate']);
  var EVENT_KEYS = {
    ProductImpressions: 'ProductImpression',
    ProductImpression: 'ProductImpression'
  };

  config = config && typeof config === 'object' ? config : {};
  var siteId = String(config.siteId || '');
  var origin = scriptOrigin();
  var options = { TRACKING: true, RECOMS: true };
  var identity = {};
  var outbox = [];
  var flushTimer = null;
  var lastAt = 0;
  /* The visitor id made on this page, should the browser refuse to keep the cookie. */
  var madeId = null;
  var consent = false;
  var clickLocation = landingParam('sc_content');
  /* Where the page enforces Trusted Types: templates are parsed inert and cleaned
   * before anything of them reaches the page (see blockNodes). */
  var trustedPolicy = null;
  try {
    if (win.trustedTypes && win.trustedTypes.createPolicy) {
      trustedPolicy = win.trustedTypes.createPolicy('spoor', {
        createHTML: function (html) { return html; }
      });
    }
  } catch (e) {
    /* The page's CSP names the policies it allows: spoor's blocks need 'spoor'. */
  }
  /* Bodies this page sent and has no answer for yet: not sent twice from one page. */
  var inFlight = {};

  function warn(message, detail) {
    try {
      if (win.console && console.warn) {
        console.warn('spoor: ' + message, detail === undefined ? '' : detail);
      }
    } catch (ignored) { /* a page that replaced console */ }
  }

  /* Runs `work`, turning any failure into a console warning. */
  function guarded(what, work) {
    return function () {
      try {
        return work.apply(null, arguments);
      } catch (e) {
        warn(what + ' failed', e);
      }
    };
  }

  function scriptOrigin() {
    try {
      /* A page element named `currentScript` must not pass for it. */
      var script = doc.currentScript;
      var src = script instanceof HTMLScriptElement ? script.getAttribute('src') : null;
      if (!src) {
        var scripts = doc.getElementsByTagName('script');
        for (var i = 0; i < scripts.length; i++) {
          var path = (scripts[i].getAttribute('src') || '').split(/[?#]/)[0];
          if (/\/(js|scripts)\/[^\/]+\.js$/.test(path) &&
              path.slice(-(siteId.length + 4)) === '/' + siteId + '.js') {
            src = scripts[i].src;
            break;
          }
        }
      }
      return new URL(src, win.location.href).origin;
    } catch (e) {
      return win.location.origin;
    }
  }

  function landingParam(name) {
    try {
      return new URL(win.location.href).searchParams.get(name);
    } catch (e) {
      return null;
    }
  }

  function isObject(value) {
    return value !== null && typeof value === 'object' && !Array.isArray(value);
  }

  function copy(value) {
    return isObject(value) ? JSON.parse(JSON.stringify(value)) : {};
  }

  var encoder = win.TextEncoder ? new TextEncoder() : null;

  function utf8Bytes(text) {
    return encoder ? encoder.encode(text).length : text.length * 3;
  }

  /* ---- storage that may be missing (private modes, sandboxes) or full ---- */

  function stored(storage, key) {
    try {
      var text = win[storage].getItem(key);
      return text ? JSON.parse(text) : null;
    } catch (e) {
      return null;
    }
  }

  function store(storage, key, value) {
    try {
      if (value === null) {
        win[storage].removeItem(key);
      } else {
        win[storage].setItem(key, JSON.stringify(value));
      }
    } catch (e) { /* storage unavailable: the page's memory only */ }
  }

  /* ---- cookies ---- */

  function readCookie(name) {
    try {
      var match = doc.cookie.match(new RegExp('(?:^|;\\s*)' + name + '=([^;]*)'));
      return match ? decodeURIComponent(match[1]) : null;
    } catch (e) {
      return null;
    }
  }

  function setCookie(text) {
    try {
      doc.cookie = text;
    } catch (e) { /* cookies refused (a sandboxed frame) */ }
  }

  function cookieDomains() {
    var host = win.location.hostname;
    var parts = host.split('.');
    if (/^[\d.]+$/.test(host) || host.indexOf(':') >= 0 || parts.length < 2) {
      return [];
    }
    var domains = [];
    for (var i = parts.length - 2; i > 0; i--) {
      domains.push(parts.slice(i).join('.'));
    }
    return domains;
  }

  /* On the widest domain the browser takes (shop.example.com sets it for example.com),
   * so that the shop's subdomains share one visitor id; the browser refuses a public
   * suffix (co.uk), and the next narrower domain is tried. */
  function writeCookie(name, value, days) {
    var attributes = '; path=/; max-age=' + days * 86400 + '; SameSite=Lax' +
      (win.location.protocol === 'https:' ? '; Secure' : '');
    var text = name + '=' + encodeURIComponent(value) + attributes;
    var domains = cookieDomains();
    for (var i = 0; i < domains.length; i++) {
      setCookie(text + '; domain=' + domains[i]);
      if (readCookie(name) === value) {
        return;
      }
    }
    setCookie(text);
  }

  function removeCookie(name) {
    setCookie(name + '=; path=/; max-age=0');
    cookieDomains().forEach(function (domain) {
      setCookie(name + '=; path=/; max-age=0; domain=' + domain);
    });
  }

  function randomId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = Array.prototype.map.call(bytes, function (b) {
      return (b + 0x100).toString(16).slice(1);
    }).join('').toUpperCase();
    return hex.slice(0, 8) + '-' + hex.slice(8, 12) + '-' + hex.slice(12, 16) + '-' +
      hex.slice(16, 20) + '-' + hex.slice(20);
  }

  /* The visitor's id: the shop's own code may set or read `sc`, so one present is kept
   * as it is; a new one only with consent. */
  function visitorId() {
    var sc = readCookie('sc');
    if (sc || !consent) {
      return sc;
    }
    if (!madeId) {
      madeId = randomId();
      writeCookie('sc', madeId, COOKIE_DAYS);
    }
    return readCookie('sc') || madeId;
  }

  /* ---- consent ---- */

  /* Whether the visitor may be tracked now: this tab's answer, and another tab's
   * refusal since (its cookie). */
  function allowed() {
    return consent && !refusedByBrowser() && readCookie(CONSENT_COOKIE) !== 'denied';
  }

  function refusedByBrowser() {
    return !!config.honourGlobalPrivacyControl && navigator.globalPrivacyControl === true;
  }

  /* A refusal is remembered whatever the site's setting; a grant only where the site
   * asks for one. */
  function initialConsent() {
    var answer = readCookie(CONSENT_COOKIE);
    if (refusedByBrowser() || answer === 'denied') {
      return false;
    }
    return config.consent !== 'required' || answer === 'granted';
  }

  function setConsent(value) {
    var granted = value === true || value === 'grant' || value === 'granted' ||
      (isObject(value) && (value.analytics === true || value.analytics_storage === 'granted'));
    if (granted && refusedByBrowser()) {
      warn('the browser asks not to be tracked (Global Privacy Control): nothing is sent');
      return;
    }
    consent = granted;
    if (consent) {
      if (config.consent === 'required') {
        writeCookie(CONSENT_COOKIE, 'granted', COOKIE_DAYS);
      } else {
        removeCookie(CONSENT_COOKIE);
      }
      scheduleFlush();
      resendPending();
      return;
    }
    /* Withdrawn: what waits is dropped and nothing of the visitor stays behind. */
    outbox = [];
    inFlight = {};
    identity = {};
    store('localStorage', PENDING_KEY, null);
    store('sessionStorage', IDENTITY_KEY, null);
    removeCookie('sc');
    madeId = null;
    writeCookie(CONSENT_COOKIE, 'denied', COOKIE_DAYS);
  }

  /* ---- events ---- */

  /* Whether `fields` name another person than the one the tab remembers. */
  function anotherPerson(fields) {
    return PERSON_FIELDS.some(function (field) {
      var value = fields[field];
      return value !== undefined && value !== null && value !== '' &&
        identity[field] !== undefined && String(identity[field]) !== String(value);
    });
  }

  function remember(generalInfo, customerData) {
    var another = anotherPerson(generalInfo) || anotherPerson(customerData);
    if (another) {
      identity = {};
    }
    var changed = another;
    Object.keys(generalInfo).forEach(function (field) {
      var value = generalInfo[field];
      var kept = IDENTITY_FIELDS.indexOf(field) >= 0 || field.indexOf('user_tags_') === 0;
      if (kept && value !== undefined && value !== null && value !== '') {
        identity[field] = value;
        changed = true;
      }
    });
    if (changed && consent) {
      store('sessionStorage', IDENTITY_KEY, Object.keys(identity).length ? identity : null);
    }
  }

  /* Campaign links name the vendor's contact: utm_content=Yespo-<id>, or
   * utm_source=Yespo-<type> with utm_content=<id>. */
  function campaignContact() {
    var content = landingParam('utm_content');
    var source = landingParam('utm_source') || '';
    if (!content) {
      return null;
    }
    var prefixed = /^(?:Yespo|eSputnik)-(.+)$/i.exec(content);
    if (prefixed) {
      return prefixed[1];
    }
    return /^(?:Yespo|eSputnik)-/i.test(source) ? content : null;
  }

  /* The tracker's body for one call: GeneralInfo (who, when, which site) beside the
   * event's own object, as the REST API takes it. */
  function eventBody(call) {
    var name = call.name;
    var body = copy(call.payload);
    var key = EVENT_KEYS[name] || name;
    var eventName = name === 'ProductImpression' ? 'ProductImpressions' : name;
    var given = {};
    if (isObject(body.GeneralInfo)) {
      given = body.GeneralInfo;
      delete body.GeneralInfo;
    }
    if (isObject(body[key]) && isObject(body[key].GeneralInfo)) {
      given = Object.assign(given, body[key].GeneralInfo);
      delete body[key].GeneralInfo;
    }
    remember(given, eventName === 'CustomerData' && isObject(body[key]) ? body[key] : {});
    if (body[key] === undefined && PAGE_EVENTS.indexOf(eventName) >= 0) {
      body[key] = {};
    }
    var location = given.s_location || given.sc_content;
    delete given.s_location;
    delete given.sc_content;
    if (eventName === 'ProductPage' || eventName === 'AddToWishlist') {
      var product = call.nested && isObject(body[key]) && isObject(body[key].Product)
        ? body[key].Product : body[key];
      location = location || (eventName === 'ProductPage' ? clickLocation : null);
      if (isObject(product) && location && !product.sc_content && !product.s_location) {
        product.sc_content = location;
      }
    }
    var info = Object.assign({}, identity, given, {
      eventName: eventName,
      siteId: siteId,
      datetime: call.at
    });
    var contact = campaignContact();
    if (contact && !info.user_es_contact_id) {
      info.user_es_contact_id = contact;
    }
    var sc = visitorId();
    if (sc) {
      info.cookies = Object.assign({}, isObject(given.cookies) ? given.cookies : {}, { sc: sc });
    }
    body.GeneralInfo = info;
    return body;
  }

  /* A call is kept as made, and becomes a request body when it leaves: until the
   * visitor consents (where the site asks for it) it waits in the page's memory, and
   * only then is the visitor's cookie set and named. Each call's time is distinct, so
   * that two identical calls are two events, never taken for a retry. */
  function track(name, payload, nested) {
    if (typeof name !== 'string' || !name) {
      warn('sendEvent needs an event name, got', name);
      return;
    }
    if (KNOWN_EVENTS.indexOf(name) < 0) {
      warn('unknown event ignored: ' + name + '; known: ' + KNOWN_EVENTS.join(', '));
      return;
    }
    if (name === 'ProductUpdate' && config.productUpdates === 'withKey') {
      warn('ProductUpdate ignored: this site takes its catalogue from its servers, with its key');
      return;
    }
    if (refusedByBrowser() || readCookie(CONSENT_COOKIE) === 'denied') {
      return;
    }
    if (outbox.length >= MAX_WAITING_EVENTS) {
      outbox.shift();
    }
    lastAt = Math.max(Date.now(), lastAt + 1);
    outbox.push({ name: name, payload: copy(payload), nested: nested, at: lastAt });
    scheduleFlush();
  }

  /* ---- transport ---- */

  function scheduleFlush() {
    if (flushTimer === null && consent) {
      flushTimer = setTimeout(guarded('sending events', function () {
        flushTimer = null;
        flush(false);
      }), FLUSH_DELAY_MS);
    }
  }

  /* The events waiting, as request bodies. */
  function takeBodies() {
    var bodies = [];
    var batch = [];
    var bytes = 2;
    while (outbox.length) {
      var call = outbox.shift();
      var text;
      try {
        text = JSON.stringify(eventBody(call));
      } catch (e) {
        warn('an event that cannot be sent was dropped', call.name);
        continue;
      }
      var size = utf8Bytes(text) + 1;
      if (size + 2 > MAX_BATCH_BYTES) {
        warn('an event too large to send was dropped', call.name);
        continue;
      }
      if (batch.length && (bytes + size > MAX_BATCH_BYTES || batch.length >= MAX_BATCH_EVENTS)) {
        bodies.push('[' + batch.join(',') + ']');
        batch = [];
        bytes = 2;
      }
      batch.push(text);
      bytes += size;
    }
    if (batch.length) {
      bodies.push('[' + batch.join(',') + ']');
    }
    return bodies;
  }

  /* What was sent and not yet answered, kept until it is: spoor down, slow, or a page
   * left before the answer came. A resend is byte for byte, so spoor stores it once. */
  function pendingList() {
    var now = Date.now();
    var list = stored('localStorage', PENDING_KEY);
    return (Array.isArray(list) ? list : []).filter(function (entry) {
      return isObject(entry) && typeof entry.body === 'string' && now - entry.at < PENDING_TTL_MS;
    });
  }

  /* `body` kept for a resend, not before `retryAt`; its first keeping time stays. */
  function keepPending(body, retryAt, tries) {
    if (!allowed()) {
      return;
    }
    var list = pendingList();
    var kept = list.filter(function (entry) { return entry.body === body; })[0];
    list = list.filter(function (entry) { return entry.body !== body; });
    list.push({ body: body, at: kept ? kept.at : Date.now(), next: retryAt, tries: tries || 0 });
    /* Counted as stored: each body is JSON inside JSON. */
    var sizes = list.map(function (entry) { return utf8Bytes(JSON.stringify(entry)) + 1; });
    var total = sizes.reduce(function (sum, size) { return sum + size; }, 0);
    while (list.length > MAX_PENDING_BODIES || total > MAX_PENDING_BYTES) {
      list.shift();
      total -= sizes.shift();
    }
    store('localStorage', PENDING_KEY, list.length ? list : null);
  }

  function dropPending(body) {
    var list = pendingList().filter(function (entry) { return entry.body !== body; });
    store('localStorage', PENDING_KEY, list.length ? list : null);
  }

  /* Whether an answer says the body is done with: taken, or refused for good. Events
   * refused for the moment (a rate limit) keep the whole body for a resend, in which
   * spoor knows the others for retries. */
  function settled(response, answer) {
    if (response.status === 429 || response.status >= 500) {
      return false;
    }
    var results = answer && Array.isArray(answer.results) ? answer.results : [];
    return !results.some(function (result) {
      return result && (result.error === 'rate_limited' || result.error === 'storage_unavailable');
    });
  }

  /* The wait before the next try of a body that failed `tries` times: doubling, with
   * jitter, so that visitors' pages do not all come back at once. */
  function backoff(tries) {
    var wait = Math.min(MAX_RETRY_MS, FIRST_RETRY_MS * Math.pow(2, Math.max(0, tries - 1)));
    return wait / 2 + Math.random() * wait / 2;
  }

  /* The body is kept until its answer says it is done with, due again after a wait
   * that grows with each try: an answer that never comes (spoor slow, the page left)
   * counts as a failure without anyone having to see it. */
  function send(body, keepalive, tries) {
    if (!allowed() || inFlight[body]) {
      return;
    }
    inFlight[body] = true;
    tries = tries || 0;
    keepPending(body, Date.now() + backoff(tries + 1), tries + 1);
    var failed = function () {
      delete inFlight[body];
    };
    var request;
    try {
      request = fetch(origin + '/api/v2/batch', {
        method: 'POST',
        body: body,
        keepalive: keepalive,
        credentials: 'omit',
        headers: { 'Content-Type': 'text/plain' }
      });
    } catch (e) {
      return;
    }
    request.then(function (response) {
      return response.text().then(function (text) {
        var answer = null;
        try {
          answer = JSON.parse(text);
        } catch (e) { /* an answer that is not JSON */ }
        if (settled(response, answer)) {
          delete inFlight[body];
          dropPending(body);
        } else {
          failed();
        }
        if (!response.ok && response.status !== 429 && response.status < 500) {
          warn('spoor refused events', text);
        } else if (answer && answer.rejected) {
          warn('spoor refused ' + answer.rejected + ' event(s)', answer.results);
        }
      });
    }).catch(failed);
  }

  /* `leaving`: the page is being left, so beacons carry what is left (a fetch may be
   * cut); they stay pending too, since a beacon's fate is never known. */
  function flush(leaving) {
    if (!consent) {
      return;
    }
    takeBodies().forEach(function (body) {
      if (leaving && navigator.sendBeacon) {
        keepPending(body, Date.now() + backoff(1), 1);
        try {
          navigator.sendBeacon(origin + '/api/v2/batch', new Blob([body], { type: 'text/plain' }));
        } catch (e) { /* pending: sent again from the next page */ }
      } else {
        send(body, true);
      }
    });
  }

  /* Not as keepalive requests, which a browser lets carry 64 KiB in all. */
  function resendPending() {
    if (!allowed()) {
      return;
    }
    var now = Date.now();
    pendingList()
      .filter(function (entry) { return !(entry.next > now) && !inFlight[entry.body]; })
      .slice(0, RESENDS_PER_PAGE)
      .forEach(function (entry) {
        send(entry.body, false, entry.tries);
      });
  }

  /* ---- recommendations ---- */

  function recommendations(request, callback) {
    var done = typeof callback === 'function' ? callback : function () {};
    var answer = function (error, products) {
      try {
        done(error, products);
      } catch (e) {
        /* The shop's own callback failed: reported as its own error, not the script's. */
        setTimeout(function () { throw e; }, 0);
      }
    };
    if (!isObject(request) || !request.variantId) {
      answer('variantId is required', []);
      return;
    }
    var query = new URLSearchParams();
    query.set('siteId', siteId);
    query.set('block', String(request.variantId));
    /* Without consent the visitor is not named: the answer is for anyone. */
    var sc = consent ? readCookie('sc') : null;
    if (sc) {
      query.set('sc', sc);
    }
    if (request.productId) {
      query.set('productKey', String(request.productId));
    }
    if (Array.isArray(request.productIds) && request.productIds.length) {
      query.set('productKeys', request.productIds.map(String).join(','));
    }
    if (request.categoryKey) {
      query.set('categoryKey', String(request.categoryKey));
    }
    if (isObject(request.filters)) {
      query.set('filters', JSON.stringify(request.filters));
    }
    /* A slow answer is no answer: a block that came seconds late would move the page
     * under the visitor's eyes. */
    var init = { credentials: 'omit' };
    if (win.AbortController) {
      var abort = new AbortController();
      init.signal = abort.signal;
      setTimeout(function () { abort.abort(); }, RECOMMENDATIONS_TIMEOUT_MS);
    }
    fetch(origin + '/api/v2/recommendations?' + query.toString(), init)
      .then(function (response) {
        return response.json().then(function (body) {
          if (response.ok) {
            answer(null, Array.isArray(body.products) ? body.products : []);
          } else if (body && body.error === 'unknown_block') {
            answer('variantId ' + request.variantId + ' was not found in config', []);
          } else {
            answer((body && body.message) || 'recommendations failed: HTTP ' + response.status, []);
          }
        });
      })
      .catch(function () {
        answer('recommendations are unavailable: spoor did not answer', []);
      });
  }

  /* ---- blocks spoor renders by itself ---- */

  /* The script's own template carries no style attribute, which a page whose Content
   * Security Policy refuses inline styles would report; its styles are set through the
   * CSSOM once it is placed (DEFAULT_STYLES). */
  var DEFAULT_TEMPLATE =
    '<div class="spoor-block"><div class="spoor-block__title">{{title}}</div>' +
    '<div class="spoor-block__items">' +
    '{{#products}}<a class="spoor-block__item" href="{{url}}">' +
    '<img class="spoor-block__image" src="{{imgurl}}" alt="" loading="lazy">' +
    '<span class="spoor-block__name">{{name}}</span>' +
    '<span class="spoor-block__price">{{unit_price}} {{price_currency_code}}</span>' +
    '</a>{{/products}}</div></div>';
  var DEFAULT_STYLES = {
    'spoor-block__items': 'display:flex;gap:1em;overflow-x:auto',
    'spoor-block__item': 'flex:0 0 10em;text-decoration:none;color:inherit',
    'spoor-block__image': 'width:100%;aspect-ratio:1;object-fit:cover',
    'spoor-block__name': 'display:block'
  };
  var IMPRESSION_DELAY_MS = 500;
  var PLACEHOLDER = /\{\{\s*([\w.-]+)\s*\}\}/g;
  /* The attributes a template's elements keep: anything else goes (event handlers, and
   * the attributes of frameworks that run what they hold: x-*, v-*, hx-*, @click...).
   * Those that hold a placeholder are fewer: a product's values are anyone's. */
  var TEMPLATE_ATTRIBUTES = new RegExp('^(?:class|id|href|src|alt|title|width|height|loading|' +
    'decoding|rel|target|role|type|value|disabled|hidden|style|lang|dir|tabindex|colspan|' +
    'rowspan|datetime|viewbox|xmlns|fill|stroke|stroke-width|d|x|y|cx|cy|r|rx|ry|points|' +
    'transform|opacity|aria-[\\w-]+|data-[\\w-]+)$', 'i');
  var VALUE_ATTRIBUTES = /^(?:href|src|alt|title|value|aria-label|aria-description|data-[\w-]+)$/i;
  /* data-* attributes that frameworks evaluate (knockout, Angular, Alpine, htmx). */
  var FRAMEWORK_DATA = /^data-(?:bind|ng-|v-|x-|hx-|on)/i;
  /* Elements a template may not carry (the server refuses them too): what runs code,
   * reaches elsewhere, holds markup for later, or animates an address into a link. */
  var FORBIDDEN_ELEMENTS = 'script,iframe,frame,frameset,object,embed,applet,base,meta,link,' +
    'noscript,style,template,xmp,noembed,noframes,plaintext,form,portal,set,animate,' +
    'animateTransform,animatetransform,animateMotion,animatemotion,discard';
  /* What the page's events say it is, for the blocks placed on pages of a type. */
  var page = { type: null, productKey: null, categoryKey: null, cartKeys: [] };
  var rendered = {};
  var pageReady = false;
  var impressions = { seen: {}, waiting: [], timer: null };

  /* A page has one type: the first page event names it (a cart pop-up's
   * StatusCartPage does not make a product page a cart page). */
  function notePage(name, payload) {
    var body = isObject(payload) ? payload[name] : null;
    if (name === 'StatusCart') {
      var lines = Array.isArray(body) ? body : (isObject(body) && body.Products) || [];
      page.cartKeys = (Array.isArray(lines) ? lines : []).map(function (line) {
        return isObject(line) ? String(line.productKey || line.product_id || '') : '';
      }).filter(Boolean);
      page.type = page.type || 'cart';
      return;
    }
    if (page.type) {
      return;
    }
    if (name === 'MainPage') {
      page.type = 'main';
    } else if (name === 'NotFound') {
      page.type = 'notFound';
    } else if (name === 'StatusCartPage') {
      page.type = 'cart';
    } else if (name === 'CategoryPage') {
      page.type = 'category';
      var category = isObject(body) && (isObject(body.Category) ? body.Category : body);
      page.categoryKey = category && category.categoryKey ? String(category.categoryKey) : null;
    } else if (name === 'ProductPage') {
      page.type = 'product';
      var product = isObject(body) && (isObject(body.Product) ? body.Product : body);
      page.productKey = product && product.productKey ? String(product.productKey) : null;
    }
  }

  /* The shop's own site: its host, or one of its subdomains or parents (www.shop.example
   * and shop.example). */
  function sameSite(host) {
    var own = win.location.hostname.replace(/^www\./, '');
    var other = host.replace(/^www\./, '');
    return other === own || other.slice(-own.length - 1) === '.' + own ||
      (other.indexOf('.') > 0 && own.slice(-other.length - 1) === '.' + other);
  }

  /* A link or image address from the catalogue: anyone may post a ProductUpdate, so
   * only web addresses are kept, links only to the shop's own site, images from any
   * https host. */
  function safeUrl(text, isImage, fromTemplate) {
    var url;
    try {
      url = new URL(text, win.location.href);
    } catch (e) {
      return null;
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      return null;
    }
    if (fromTemplate || sameSite(url.hostname)) {
      return url.href;
    }
    return isImage && url.protocol === 'https:' ? url.href : null;
  }

  function valueText(value) {
    if (value === undefined || value === null) {
      return '';
    }
    return Array.isArray(value) ? value.join(', ') : String(value);
  }

  function filled(text, values) {
    return text.replace(PLACEHOLDER, function (all, name) {
      return valueText(values[name]);
    });
  }

  /* Markup parsed inert (a template element runs nothing and loads nothing), without
   * what may run or reach elsewhere. */
  function inert(html) {
    var holder = doc.createElement('template');
    holder.innerHTML = trustedPolicy ? trustedPolicy.createHTML(html) : html;
    var content = holder.content;
    var banned = content.querySelectorAll(FORBIDDEN_ELEMENTS);
    for (var i = 0; i < banned.length; i++) {
      banned[i].parentNode.removeChild(banned[i]);
    }
    return content;
  }

  /* The placeholders of one element's attributes, filled through the DOM, never through
   * markup: a value cannot leave its attribute, whatever quotes or brackets it holds.
   * Attributes off the lists go; addresses are checked (see safeUrl). */
  function fillAttributes(element, values, styles) {
    Array.prototype.slice.call(element.attributes).forEach(function (attribute) {
      var name = attribute.name.toLowerCase();
      var holdsValue = attribute.value.indexOf('{{') >= 0;
      if (name === 'style' && !holdsValue) {
        /* Applied through the CSSOM once placed: a page whose Content Security Policy
         * refuses inline styles refuses style attributes, not the CSSOM. */
        styles.push({ element: element, css: attribute.value });
        element.removeAttributeNode(attribute);
        return;
      }
      var listed = holdsValue ? VALUE_ATTRIBUTES : TEMPLATE_ATTRIBUTES;
      if (!listed.test(name) || FRAMEWORK_DATA.test(name)) {
        element.removeAttributeNode(attribute);
        return;
      }
      var text = holdsValue ? filled(attribute.value, values) : attribute.value;
      if (name === 'href' || name === 'src') {
        var safe = text.trim() === '' ? null : safeUrl(text.trim(), name === 'src', !holdsValue);
        if (safe === null) {
          element.removeAttributeNode(attribute);
          return;
        }
        text = safe;
      }
      if (text !== attribute.value) {
        attribute.value = text;
      }
    });
  }

  /* Every placeholder under `root` filled with `values`, text as text (style elements,
   * where a value would be CSS, are gone already). */
  function fillTree(root, values, styles) {
    var walker = doc.createTreeWalker(root, 5 /* elements and text */);
    var node = walker.nextNode();
    while (node) {
      if (node.nodeType === 1) {
        fillAttributes(node, values, styles);
      } else if (node.data.indexOf('{{') >= 0) {
        node.data = filled(node.data, values);
      }
      node = walker.nextNode();
    }
  }

  /* The block's elements: the template around its products section, and that section
   * once per product, wrapped in an element that names the product (impressions and
   * add-to-cart buttons are read from it). */
  function blockNodes(block, products) {
    var own = typeof block.template !== 'string';
    var template = own ? DEFAULT_TEMPLATE : block.template;
    var open = template.indexOf('{{#products}}');
    var close = template.indexOf('{{/products}}');
    if (open < 0 || close < open) {
      return null;
    }
    var each = template.slice(open + 13, close);
    var outer = inert(template.slice(0, open) + '<!--spoor-products-->' +
      template.slice(close + 13));
    var styles = [];
    fillTree(outer, { title: block.title || '' }, styles);
    var walker = doc.createTreeWalker(outer, 128 /* comments */);
    var marker = walker.nextNode();
    while (marker && marker.data !== 'spoor-products') {
      marker = walker.nextNode();
    }
    if (!marker) {
      return null;
    }
    products.forEach(function (product) {
      var item = doc.createElement('div');
      item.className = 'spoor-item';
      item.style.display = 'contents';
      item.setAttribute('data-spoor-product', valueText(product.product_id));
      item.setAttribute('data-spoor-container', valueText(product.container_type));
      var part = inert(each);
      fillTree(part, product, styles);
      item.appendChild(part);
      marker.parentNode.insertBefore(item, marker);
    });
    marker.parentNode.removeChild(marker);
    if (own) {
      Object.keys(DEFAULT_STYLES).forEach(function (name) {
        var styled = outer.querySelectorAll('.' + name);
        for (var i = 0; i < styled.length; i++) {
          styles.push({ element: styled[i], css: DEFAULT_STYLES[name] });
        }
      });
    }
    return { nodes: outer, styles: styles };
  }

  /* An empty element where the block goes: placed at once, so that blocks share an
   * element in the order of the site's blocks whatever order their answers come in. */
  function place(block) {
    var target = null;
    try {
      target = doc.querySelector(block.selector);
    } catch (e) {
      warn('block ' + block.id + ' has a selector the browser does not understand', block.selector);
      return null;
    }
    if (!target) {
      warn('no element matches the selector of block ' + block.id, block.selector);
      return null;
    }
    var holder = doc.createElement('div');
    holder.className = 'spoor-placed';
    holder.setAttribute('data-spoor-block', block.id);
    var where = { before: 'beforebegin', after: 'afterend' }[block.position] || 'beforeend';
    target.insertAdjacentElement(where, holder);
    return holder;
  }

  /* A product without a picture, or whose picture fails, keeps its place in the layout
   * without the browser's broken-image sign. */
  function hideMissingImages(holder) {
    var images = holder.querySelectorAll('img');
    for (var i = 0; i < images.length; i++) {
      var source = images[i].getAttribute('src');
      if (!source) {
        images[i].style.visibility = 'hidden';
      }
      images[i].addEventListener('error', function () {
        this.style.visibility = 'hidden';
      });
    }
  }

  function queueImpression(element) {
    var id = element.getAttribute('data-spoor-product');
    var container = element.getAttribute('data-spoor-container');
    var key = container + '\u0000' + id;
    if (impressions.seen[key]) {
      return;
    }
    impressions.seen[key] = true;
    impressions.waiting.push({ product_id: id, container_type: container });
    if (impressions.timer === null) {
      impressions.timer = setTimeout(guarded('sending impressions', function () {
        impressions.timer = null;
        var shown = impressions.waiting;
        impressions.waiting = [];
        track('ProductImpressions', { ProductImpression: shown }, false);
      }), IMPRESSION_DELAY_MS);
    }
  }

  /* An impression is a product at least half in view, counted once per page. */
  function watchImpressions(holder) {
    if (!win.IntersectionObserver) {
      return;
    }
    var observer = new IntersectionObserver(guarded('counting impressions', function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting && entry.intersectionRatio >= 0.5) {
          queueImpression(entry.target);
          observer.unobserve(entry.target);
        }
      });
    }), { threshold: [0.5] });
    var items = holder.querySelectorAll('.spoor-item');
    for (var i = 0; i < items.length; i++) {
      /* `display: contents` gives the wrapper no box: its first element is watched. */
      var shown = items[i].firstElementChild || items[i];
      shown.setAttribute('data-spoor-product', items[i].getAttribute('data-spoor-product'));
      shown.setAttribute('data-spoor-container', items[i].getAttribute('data-spoor-container'));
      observer.observe(shown);
    }
  }

  /* A block's "add to cart" (an element with `data-spoor-add-to-cart`): reported as the
   * vendor's pages do (a ProductPage with the block in `s_location`), and passed to the
   * shop's code as a `spoor:add-to-cart` event to put the product in its cart. */
  function onBlockClick(event) {
    var button = event.target && event.target.closest &&
      event.target.closest('[data-spoor-add-to-cart]');
    var item = button && button.closest('.spoor-item');
    if (!item) {
      return;
    }
    event.preventDefault();
    var id = item.getAttribute('data-spoor-product');
    var container = item.getAttribute('data-spoor-container');
    track('ProductPage', {
      ProductPage: { productKey: id, price: button.getAttribute('data-price') || '0' },
      GeneralInfo: { s_location: container }
    }, false);
    doc.dispatchEvent(new CustomEvent('spoor:add-to-cart', {
      detail: { productId: id, containerType: container }
    }));
  }

  function showBlock(block) {
    rendered[block.id] = true;
    var request = { variantId: block.id };
    if (page.productKey) {
      request.productId = page.productKey;
    }
    if (page.cartKeys.length) {
      request.productIds = page.cartKeys;
    }
    if (page.categoryKey) {
      request.categoryKey = page.categoryKey;
    }
    var holder = place(block);
    if (!holder) {
      rendered[block.id] = false;
      return;
    }
    recommendations(request, guarded('placing block ' + block.id, function (error, products) {
      var nodes = null;
      try {
        nodes = !error && products.length ? blockNodes(block, products) : null;
      } catch (e) {
        warn('block ' + block.id + ' could not be shown', e);
      }
      if (!nodes) {
        if (holder.parentNode) {
          holder.parentNode.removeChild(holder);
        }
        return;
      }
      holder.appendChild(nodes.nodes);
      nodes.styles.forEach(function (style) {
        style.element.style.cssText = style.css;
      });
      hideMissingImages(holder);
      holder.addEventListener('click', guarded('a block click', onBlockClick));
      watchImpressions(holder);
    }));
  }

  function renderPlacedBlocks() {
    if (!options.RECOMS || !Array.isArray(config.blocks)) {
      return;
    }
    config.blocks.forEach(function (block) {
      var types = isObject(block) && Array.isArray(block.pageTypes) ? block.pageTypes : [];
      var matches = types.indexOf('any') >= 0 || (page.type && types.indexOf(page.type) >= 0);
      if (matches && !rendered[block.id]) {
        showBlock(block);
      }
    });
  }

  /* A page's type may come after the document is ready (plugins send theirs on
   * DOMContentLoaded): its blocks are placed then. */
  function pageEvent(name, payload) {
    notePage(name, payload);
    if (pageReady) {
      renderPlacedBlocks();
    }
  }

  /* ---- the calls ---- */

  var calls = {
    init: function (given) {
      if (isObject(given)) {
        options.TRACKING = given.TRACKING !== false;
        options.RECOMS = given.RECOMS !== false;
      }
    },
    sendEvent: function (name, payload) {
      track(name, payload, false);
      pageEvent(name, payload);
    },
    sendEventWithTags: function (name, payload) {
      track(name, payload, true);
      pageEvent(name, payload);
    },
    getRecommendations: recommendations,
    consent: setConsent
  };

  function handle(args) {
    try {
      var name = args[0];
      var call = typeof name === 'string' && Object.prototype.hasOwnProperty.call(calls, name)
        ? calls[name] : null;
      if (!call) {
        warn('unknown call ignored:', name);
        return;
      }
      call.apply(null, Array.prototype.slice.call(args, 1));
    } catch (e) {
      warn('a call failed and was ignored', e);
    }
  }

  function isArguments(value) {
    return Object.prototype.toString.call(value) === '[object Arguments]';
  }

  /* The loader's stub passes each call's `arguments` on wrapped once more (to `c`, or
   * into its queue); the Shopify extension's queues them as they are. */
  function unwrapped(args) {
    return args && args.length === 1 && isArguments(args[0]) ? args[0] : args;
  }

  function replay(queue) {
    if (!queue || typeof queue.length !== 'number') {
      return;
    }
    for (var i = 0; i < queue.length; i++) {
      handle(unwrapped(queue[i]));
    }
  }

  function start() {
    var previous = win.eS;
    if (previous && previous.spoor) {
      return;
    }
    consent = initialConsent();
    identity = consent ? stored('sessionStorage', IDENTITY_KEY) || {} : {};
    var eS = function () {
      handle(arguments);
    };
    eS.spoor = true;
    eS.q = [];
    eS.c = function () {
      handle(unwrapped(arguments));
    };
    win.eS = eS;
    win._esConfig = win._esConfig || { orgId: siteId };
    /* The cookie at once, for the shop's own code on this page (it may read `sc`). */
    visitorId();
    track('PageView', { PageView: {} }, false);
    if (typeof previous === 'function') {
      /* The loader's stub forwards to its `c`: page code holding the stub still
       * reaches the script. */
      previous.c = eS.c;
      replay(previous.q);
      previous.q = [];
    }
    resendPending();
    doc.addEventListener('visibilitychange', guarded('sending events', function () {
      if (doc.visibilityState === 'hidden') {
        flush(false);
      }
    }));
    win.addEventListener('pagehide', guarded('sending events', function () {
      flush(true);
    }));
    win.addEventListener('online', guarded('sending events', resendPending));
    var ready = guarded('placing blocks', function () {
      pageReady = true;
      renderPlacedBlocks();
    });
    if (doc.readyState === 'loading') {
      doc.addEventListener('DOMContentLoaded', ready);
    } else {
      ready();
    }
    /* Blocks whose element the shop's own code makes after the document is read. */
    win.addEventListener('load', guarded('placing blocks', renderPlacedBlocks));
  }

  try {
    start();
  } catch (e) {
    warn('the script could not start', e);
  }
})
