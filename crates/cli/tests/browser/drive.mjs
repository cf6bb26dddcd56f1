// Drives headless Chromium through one scenario of crates/cli/tests/browser.rs on the
// test shop's pages, and prints what it saw as one JSON line for the Rust test to check
// against what spoor stored.
//
//   node drive.mjs <scenario> <shop url> <profile dir> <spoor url>
//
// Screenshots go to $SCREENSHOTS, or into the profile directory.
//
// The profile directory keeps cookies, storage and the HTTP cache between scenarios, as
// a visitor's browser does between visits.
import { chromium } from 'playwright-core';

const [scenario, shop, profile, spoor] = process.argv.slice(2);

const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || await context.newPage();
const seen = { errors: [], warnings: [], sent: [], failed: [] };
page.on('pageerror', (error) => seen.errors.push(String(error)));
page.on('console', (message) => {
  if (message.type() === 'warning' || message.type() === 'error') {
    seen.warnings.push(message.text());
  }
});
page.on('request', (request) => {
  if (request.url().startsWith(spoor) && request.url().includes('/api/v2/batch')) {
    seen.sent.push(request.postData());
  }
});
page.on('requestfailed', (request) => {
  if (request.url().startsWith(spoor)) {
    seen.failed.push(request.url());
  }
});

const settle = (ms) => page.waitForTimeout(ms);
const cookie = () => page.evaluate(() => {
  const match = document.cookie.match(/(?:^|;\s*)sc=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : null;
});
const recommendations = async () => {
  await page.waitForFunction(() => window.__recs !== null, null, { timeout: 10000 });
  return page.evaluate(() => window.__recs);
};
const pending = () => page.evaluate(() => localStorage.getItem('spoor.pending'));

// Every form of sendEvent and sendEventWithTags the vendor's pages use, and calls the
// script does not know.
async function everyForm(tag) {
  await page.evaluate((tag) => {
    const product = { productKey: 'p2', price: '19.90', isInStock: 1, tag_color: ['red'] };
    const guid = 'cart-' + tag;
    eS('sendEvent', 'ProductPage', { ProductPage: product });
    eS('sendEvent', 'StatusCart', {
      StatusCart: [{ productKey: 'p2', price: '19.90', quantity: '2', currency: 'EUR' }],
      GUID: guid,
    });
    eS('sendEvent', 'PurchasedItems', {
      OrderNumber: 'order-' + tag,
      PurchasedItems: [{ productKey: 'p2', price: '19.90', quantity: '2', currency: 'EUR' }],
      GUID: guid,
    });
    eS('sendEvent', 'CustomerData', {
      CustomerData: { externalCustomerId: '42', user_email: tag + '@example.com', user_name: 'Ann' },
    });
    eS('sendEvent', 'CategoryPage', { CategoryPage: { categoryKey: 'Mugs' }, Tags: { season: ['summer'] } });
    eS('sendEvent', 'AddToWishlist', { AddToWishlist: { productKey: 'p3', price: '5', isInStock: 1 } });
    eS('sendEvent', 'SearchRequest', { SearchRequest: { search: 'query-' + tag, isFound: 0 } });
    eS('sendEvent', 'ProductImpressions', {
      ProductImpression: [{ product_id: 'p1', container_type: 'home_default' }],
    });
    eS('sendEvent', 'MainPage');
    eS('sendEvent', 'NotFound');
    eS('sendEvent', 'StatusCartPage');
    eS('sendEvent', 'PageView', { PageView: { GeneralInfo: { user_phone: '380501112233' } } });
    eS('sendEventWithTags', 'ProductPage', {
      ProductPage: { Product: { productKey: 'p4', price: '7', isInStock: 0 }, Tags: { size: ['L'] } },
    });
    eS('sendEventWithTags', 'StatusCart', {
      StatusCart: { GUID: guid + '-2', Products: [{ productKey: 'p4', price: '7', quantity: 1 }], Tags: {} },
    });
    eS('sendEventWithTags', 'PurchasedItems', {
      PurchasedItems: {
        Products: [{ product_id: 'p4', unit_price: '7', quantity: 1 }],
        OrderNumber: 'order-' + tag + '-2', GUID: guid + '-2', Tags: { block_id: ['home_default'] },
      },
    });
    eS('sendEventWithTags', 'CategoryPage', { CategoryPage: { Category: { categoryKey: 'Cups' }, Tags: {} } });
    eS('sendEventWithTags', 'ProductImpression', {
      ProductImpression: { Products: [{ product_id: 'p4', container_type: 'home_default' }], Tags: {} },
    });
    eS('noSuchCall', 1, 2);
    eS('sendEvent');
  }, tag);
}

const result = { scenario };
if (scenario === 'browse') {
  await page.goto(shop + '/');
  result.home = await recommendations();
  result.firstCookie = await cookie();
  await page.goto(shop + '/product/p1');
  result.product = await recommendations();
  result.secondCookie = await cookie();
  await page.goto(shop + '/unknown-block');
  result.unknownBlock = await recommendations();
  await page.goto(shop + '/shopify');
  result.shopify = await recommendations();
  result.shopifyCookie = await cookie();
  await everyForm('browse');
  await settle(1500);
  result.typeofES = await page.evaluate(() => typeof eS);
} else if (scenario === 'placed') {
  // Items in the ProductImpression lists of the batches sent so far.
  const impressions = () => seen.sent
    .flatMap((body) => JSON.parse(body))
    .filter((event) => event.GeneralInfo.eventName === 'ProductImpressions')
    .reduce((sum, event) => sum + event.ProductImpression.length, 0);
  await page.goto(shop + '/missing');
  await page.waitForSelector('.spoor-placed .spoor-block__item', { timeout: 10000 });
  await settle(1500);
  result.rendered = await page.locator('.spoor-placed .spoor-block__item').count();
  result.names = await page.locator('.spoor-placed .spoor-block__name').allTextContents();
  await page.hover('.spoor-placed .spoor-block__item');
  result.injected = await page.evaluate(() => window.__injected === 1 ||
    document.querySelectorAll('.spoor-placed img[src="x"]').length > 0 ||
    Array.from(document.querySelectorAll('.spoor-placed *')).some((element) =>
      Array.from(element.attributes).some((a) =>
        !/^(class|href|title|alt|src|style|data-name|data-spoor-[a-z-]+)$/.test(a.name) ||
        (a.name === 'style' && a.value.includes('url(')))));
  result.impressionsBeforeScroll = impressions();
  await page.locator('#below').scrollIntoViewIfNeeded();
  await settle(1500);
  result.impressionsInView = impressions();
  await page.evaluate(() => window.scrollTo(0, 0));
  await settle(500);
  await page.locator('#below').scrollIntoViewIfNeeded();
  await settle(1500);
  result.impressionsAfterScrollingBack = impressions();
  await page.screenshot({ path: (process.env.SCREENSHOTS || profile) + '/placed.png' });
  const link = page.locator('.spoor-placed .spoor-block__item').first();
  const href = await link.getAttribute('href');
  await Promise.all([page.waitForURL(/\/product\//), link.click()]);
  result.clicked = page.url();
  await recommendations();
  const key = new URL(href).pathname.split('/').pop();
  await page.evaluate((key) => {
    eS('sendEvent', 'PurchasedItems', {
      OrderNumber: 'placed-order', GUID: 'placed-cart',
      PurchasedItems: [{ productKey: key, price: '10', quantity: '1' }],
    });
  }, key);
  await settle(1500);
} else if (scenario === 'offline') {
  // spoor is stopped: the script comes from the browser's cache, the events fail.
  await page.goto(shop + '/cart');
  await page.evaluate(() => {
    eS('sendEvent', 'SearchRequest', { SearchRequest: { search: 'while-spoor-was-down', isFound: 0 } });
  });
  await settle(1500);
  result.pending = await pending();
  result.cookie = await cookie();
} else if (scenario === 'back') {
  await page.goto(shop + '/');
  await recommendations();
  await settle(1500);
  result.pending = await pending();
} else if (scenario === 'consent') {
  await page.goto(shop + '/?site=CONSENT');
  await recommendations();
  await settle(500);
  result.before = { cookie: await cookie(), sent: seen.sent.length };
  await page.evaluate(() => eS('consent', true));
  await settle(1500);
  result.after = { cookie: await cookie(), sent: seen.sent.length };
  await page.evaluate(() => eS('consent', false));
  await page.evaluate(() => eS('sendEvent', 'MainPage'));
  await settle(500);
  result.withdrawn = { sent: seen.sent.length };
} else if (scenario === 'strict') {
  const violations = [];
  page.on('console', (message) => {
    // The page's own <style> element is refused too; spoor's would be style attributes.
    if (/Content Security Policy/.test(message.text()) && /style attributes/.test(message.text())) {
      violations.push(message.text());
    }
  });
  await page.goto(shop + '/strict');
  const items = '.spoor-placed[data-spoor-block="basket"] .spoor-block__item';
  await page.waitForSelector(items, { timeout: 10000 });
  result.items = await page.locator(items).count();
  result.display = await page.evaluate(() =>
    getComputedStyle(document.querySelector('.spoor-placed .spoor-block__items')).display);
  await settle(500);
  await page.screenshot({ path: (process.env.SCREENSHOTS || profile) + '/strict.png' });
  result.violations = violations;
} else if (scenario === 'gpc') {
  await context.addInitScript(() => {
    Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true });
  });
  await page.goto(shop + '/?site=GPC');
  result.recommended = (await recommendations()).items;
  await page.evaluate(() => eS('consent', true));
  await page.evaluate(() => eS('sendEvent', 'MainPage'));
  await settle(1500);
  result.signal = await page.evaluate(() => navigator.globalPrivacyControl);
  result.cookie = await cookie();
} else if (scenario === 'demo') {
  // `spoor demo`'s shop: a visitor's walk from the home page to an order.
  const shots = process.env.SCREENSHOTS || profile;
  const blockItems = async (block) => {
    const items = `.spoor-placed[data-spoor-block="${block}"] .spoor-block__item`;
    await page.waitForSelector(items, { timeout: 15000 });
    return page.locator(items).count();
  };
  await page.setViewportSize({ width: 1280, height: 1000 });
  await page.goto(shop + '/');
  result.homePopular = await blockItems('home-popular');
  await page.screenshot({ path: shots + '/demo-home.png', fullPage: true });
  await page.locator('.category').first().click();
  result.category = await blockItems('category-top');
  await page.locator('.tile').first().click();
  result.similar = await blockItems('product-similar');
  await page.locator('#add').click();
  await settle(300);
  await page.screenshot({ path: shots + '/demo-product.png', fullPage: true });
  await page.goto(shop + '/cart');
  result.crossSell = await blockItems('cart-cross-sell');
  await page.locator('[data-spoor-add-to-cart]').first().click();
  await settle(300);
  result.cartLines = await page.locator('#cart tr').count();
  await page.screenshot({ path: shots + '/demo-cart.png', fullPage: true });
  await page.goto(shop + '/');
  result.personal = await blockItems('home-personal');
  await page.goto(shop + '/checkout');
  await page.fill('input[name=email]', 'visitor@example.com');
  await page.locator('#checkout button').click();
  await settle(1500);
  result.thanked = await page.locator('#thanks').isVisible();
  result.cookie = await cookie();
} else {
  result.error = 'unknown scenario ' + scenario;
}
result.seen = seen;
await context.close();
console.log(JSON.stringify(result));
