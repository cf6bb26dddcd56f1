// Drives headless Chromium through spoor's dashboard for crates/cli/tests/dashboard.rs,
// and prints what it saw as one JSON line for the Rust test to check against the API.
//
//   node dashboard.mjs <spoor url> <admin token> <site key> <site> <product key> <email>
//
// Screenshots go to $SCREENSHOTS when it is set. Every page is checked with axe-core,
// injected through the DevTools protocol (the pages' CSP allows no inline script).
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');
const [base, adminToken, siteKey, site, productKey, email] = process.argv.slice(2);
const shots = process.env.SCREENSHOTS;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const seen = { errors: [], axe: {} };
// Console errors are collected while signed in with good keys; the refused sign-in's
// 401 is expected to be told.
let watching = false;

async function newPage(options = {}) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, ...options });
  const page = await context.newPage();
  page.on('pageerror', (error) => seen.errors.push(`${page.url()}: ${error}`));
  page.on('console', (message) => {
    const expected = message.text().includes('status of 422');
    if (watching && !expected && (message.type() === 'error' || message.type() === 'warning')) {
      seen.errors.push(`${page.url()}: ${message.text()}`);
    }
  });
  return { context, page };
}

async function signIn(page, key) {
  await page.goto(`${base}/ui/`);
  await page.fill('#key', key);
  const [response] = await Promise.all([
    page.waitForNavigation(),
    page.click('button[type=submit]'),
  ]);
  return response;
}

async function axe(page, name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    const outcome = await window.axe.run(document, { resultTypes: ['violations'] });
    return outcome.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
  seen.axe[name] = result;
}

async function shoot(page, name) {
  if (shots) await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

const text = (page, selector) => page.locator(selector).first().innerText();
const site_url = (path) => `${base}/ui/sites/${site}/${path}`;

// A wrong key: refused, slowly, and told why.
{
  const { context, page } = await newPage();
  const started = Date.now();
  const response = await signIn(page, 'not-a-key-of-this-spoor');
  seen.wrongKey = {
    status: response.status(),
    ms: Date.now() - started,
    said: await text(page, '#key-problem'),
  };
  await context.close();
}

// The site's key: its own site only; the cookie is HttpOnly and SameSite=Strict; a change
// without the form's token is refused; signing out ends the session.
{
  const { context, page } = await newPage();
  watching = true;
  await signIn(page, siteKey);
  seen.siteKey = { landed: new URL(page.url()).pathname };
  const cookie = (await context.cookies()).find((c) => c.name === 'spoor_session');
  seen.siteKey.cookie = cookie && { httpOnly: cookie.httpOnly, sameSite: cookie.sameSite };
  watching = false;
  seen.siteKey.otherSite = (await page.goto(`${base}/ui/sites/OTHER/overview`)).status();
  const forged = await page.request.post(`${base}/ui/sign-out`, { form: { csrf: 'forged' } });
  seen.siteKey.forgedSignOut = forged.status();
  await page.goto(site_url('overview'));
  const csrf = await page.inputValue('.sign-out input[name=csrf]');
  const other = await page.request.post(`${base}/ui/sites/OTHER/contacts/erase`,
    { form: { csrf, by: 'email', value: email, confirm: email } });
  seen.siteKey.otherSitesErase = other.status();
  const crossSite = await page.request.post(`${base}/ui/sites/${site}/triggers/test`,
    { form: { csrf, webhook: 'crm' }, headers: { Origin: 'https://shop.example' } });
  seen.siteKey.crossSiteForm = crossSite.status();
  seen.siteKey.stillIn = (await page.goto(site_url('overview'))).status() === 200
    && await page.locator('nav').count() === 1;
  await Promise.all([page.waitForNavigation(), page.click('.sign-out button')]);
  await page.goto(site_url('overview'));
  seen.siteKey.afterSignOut = { path: new URL(page.url()).pathname, asksKey: await page.locator('#key').count() };
  await context.close();
}

// The admin token: every site, every page.
const { context, page } = await newPage();
watching = true;
await signIn(page, adminToken);
seen.sites = await page.locator('main table tbody tr td:first-child').allInnerTexts();

await page.goto(site_url('overview'));
await axe(page, 'overview');
seen.overview = {};
for (const id of ['events', 'contacts', 'products', 'orders']) {
  seen.overview[id] = await text(page, `#${id}`);
}
seen.overview.refusals = await page.locator('#refusals tbody tr').allInnerTexts();
await shoot(page, 'dashboard-overview');
// The live part follows new events without a reload: a view posted now is counted in
// the last hour's ProductPage row once the part refreshes (every 10 s).
const hourViews = () => {
  const row = [...document.querySelectorAll('#by-type tbody tr')]
    .find((r) => r.querySelector('th')?.textContent === 'ProductPage');
  return row ? Number(row.querySelectorAll('td')[1].textContent.replace(/,/g, '')) : 0;
};
seen.overview.liveViewsBefore = await page.evaluate(hourViews);
const view = {
  GeneralInfo: { eventName: 'ProductPage', siteId: site, cookies: { sc: 'live-visitor' } },
  ProductPage: { productKey, price: '2.55' },
};
await page.request.post(`${base}/api/v2`, { data: view });
await page.waitForFunction((before) => {
  const row = [...document.querySelectorAll('#by-type tbody tr')]
    .find((r) => r.querySelector('th')?.textContent === 'ProductPage');
  return row && Number(row.querySelectorAll('td')[1].textContent.replace(/,/g, '')) > before;
}, seen.overview.liveViewsBefore, { timeout: 30000 });
seen.overview.liveViewsAfter = await page.evaluate(hourViews);

await page.goto(site_url('blocks'));
await axe(page, 'blocks');
seen.blockList = await page.locator('#blocks tbody tr').allInnerTexts();

await page.goto(site_url('blocks/ab-test'));
await axe(page, 'block');
seen.variants = {};
for (const variant of ['a', 'b']) {
  const row = page.locator(`#variants tr[data-variant="${variant}"]`);
  seen.variants[variant] = {
    impressions: await row.locator('.impressions').innerText(),
    clicks: await row.locator('.clicks').innerText(),
  };
}
seen.verdicts = await page.locator('#comparison li').allInnerTexts();
await shoot(page, 'dashboard-block-comparison');

// An edit with an error: shown at the field it names, what was typed kept.
await page.fill('#block-size', '1000');
let [response] = await Promise.all([page.waitForNavigation(), page.click('form.edit button[type=submit]')]);
seen.badEdit = {
  status: response.status(),
  error: await text(page, '#block-size-error'),
  invalid: await page.getAttribute('#block-size', 'aria-invalid'),
  kept: await page.inputValue('#block-size'),
};
await page.fill('#block-size', '4');
[response] = await Promise.all([page.waitForNavigation(), page.click('form.edit button[type=submit]')]);
seen.goodEdit = { status: response.status(), said: await page.locator('#saved').count() };

await page.fill('#preview-product', productKey);
await Promise.all([page.waitForNavigation(), page.click('form.preview button[type=submit]')]);
seen.preview = await page.locator('#preview li').count();

await page.goto(site_url('triggers'));
await axe(page, 'triggers');
seen.deadLetters = await page.locator('#dead-letters tbody tr').count();
await shoot(page, 'dashboard-triggers');
await Promise.all([page.waitForNavigation(), page.locator('#dead-letters button').first().click()]);
seen.replayed = await text(page, '.notice');
await page.selectOption('#test-webhook', 'crm');
await Promise.all([page.waitForNavigation(), page.click('text=Send a sample')]);
seen.testDelivery = await text(page, '#test-answer');

await page.goto(site_url(`catalogue?product=${encodeURIComponent(productKey)}`));
await axe(page, 'catalogue');
seen.catalogue = {
  product: await page.locator('#product-view').count(),
  similar: await page.locator('#similar li').count(),
  weeklyViews: (await page.locator('#product-weeks-table td.views').allInnerTexts())
    .reduce((sum, n) => sum + Number(n), 0),
  searches: await page.locator('#top-searches tbody tr').count(),
};
await shoot(page, 'dashboard-catalogue');

async function lookUp() {
  await page.goto(site_url('contacts'));
  await page.selectOption('#lookup-by', 'email');
  await page.fill('#lookup-value', email);
  await Promise.all([page.waitForNavigation(), page.click('form.lookup button[type=submit]')]);
}
await lookUp();
await axe(page, 'contact');
await shoot(page, 'dashboard-contact');
seen.contact = { found: await page.locator('#contact').count(), timeline: await page.locator('ol.timeline li').count() };
await page.fill('#erase-confirm', 'someone else');
await Promise.all([page.waitForNavigation(), page.click('form.erase button[type=submit]')]);
seen.contact.mistyped = await page.locator('#erase-refused').count();
await lookUp();
await page.fill('#erase-confirm', email);
await Promise.all([page.waitForNavigation(), page.click('form.erase button[type=submit]')]);
seen.contact.erased = await page.locator('#erased').count();
await lookUp();
seen.contact.afterwards = await page.locator('#not-found').count();
watching = false;
await context.close();

// The dark theme: its contrast checked too.
{
  const { context, page } = await newPage({ colorScheme: 'dark' });
  await signIn(page, adminToken);
  await page.goto(site_url('overview'));
  await axe(page, 'overview (dark)');
  await shoot(page, 'dashboard-overview-dark');
  await page.goto(site_url('blocks/ab-test'));
  await axe(page, 'block (dark)');
  await context.close();
}

await browser.close();
console.log(JSON.stringify(seen));
