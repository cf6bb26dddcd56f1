// The demo shop's own code: a cart kept in the visitor's browser, reported to spoor with
// the calls a shop makes (StatusCart, PurchasedItems, CustomerData).
(function () {
  'use strict';
  var KEY = 'demo.cart';

  function newCart() {
    return { guid: 'cart-' + Date.now().toString(36) + Math.random().toString(36).slice(2, 8), lines: [] };
  }

  function load() {
    try {
      var cart = JSON.parse(localStorage.getItem(KEY));
      return cart && Array.isArray(cart.lines) ? cart : newCart();
    } catch (e) {
      return newCart();
    }
  }

  function save(cart) {
    try {
      localStorage.setItem(KEY, JSON.stringify(cart));
    } catch (e) {
      // The cart lasts as long as the page.
    }
    showCount(cart);
  }

  function showCount(cart) {
    var count = document.getElementById('cart-count');
    if (count) {
      count.textContent = cart.lines.reduce(function (n, line) { return n + line.quantity; }, 0);
    }
  }

  function report(cart) {
    eS('sendEvent', 'StatusCart', {
      StatusCart: cart.lines.map(function (line) {
        return { productKey: line.key, price: line.price, quantity: line.quantity };
      }),
      GUID: cart.guid
    });
  }

  function add(item) {
    var cart = load();
    var line = cart.lines.filter(function (l) { return l.key === item.key; })[0];
    if (line) {
      line.quantity += 1;
    } else {
      cart.lines.push({ key: item.key, name: item.name, price: item.price, quantity: 1 });
    }
    save(cart);
    report(cart);
  }

  function text(tag, content) {
    var element = document.createElement(tag);
    element.textContent = content;
    return element;
  }

  function showCart() {
    var cart = load();
    report(cart);
    var box = document.getElementById('cart');
    box.textContent = '';
    if (!cart.lines.length) {
      box.appendChild(text('p', 'Your cart is empty.'));
      return;
    }
    var table = document.createElement('table');
    var total = 0;
    cart.lines.forEach(function (line) {
      var row = document.createElement('tr');
      var name = document.createElement('td');
      var link = text('a', line.name);
      link.href = '/product/' + encodeURIComponent(line.key);
      name.appendChild(link);
      row.appendChild(name);
      row.appendChild(text('td', line.quantity + ' × £' + line.price));
      var remove = text('button', 'Remove');
      remove.type = 'button';
      remove.addEventListener('click', function () {
        var now = load();
        now.lines = now.lines.filter(function (l) { return l.key !== line.key; });
        save(now);
        showCart();
      });
      var cell = document.createElement('td');
      cell.appendChild(remove);
      row.appendChild(cell);
      table.appendChild(row);
      total += line.quantity * parseFloat(line.price);
    });
    box.appendChild(table);
    box.appendChild(text('p', 'Total: £' + total.toFixed(2)));
    var checkout = text('a', 'Checkout');
    checkout.className = 'button';
    checkout.href = '/checkout';
    box.appendChild(checkout);
  }

  function addButton(item) {
    document.getElementById('add').addEventListener('click', function () {
      add(item);
      document.getElementById('added').hidden = false;
    });
  }

  function checkout() {
    var form = document.getElementById('checkout');
    form.addEventListener('submit', function (event) {
      event.preventDefault();
      var cart = load();
      var email = form.elements.email.value;
      eS('sendEvent', 'CustomerData', { CustomerData: { user_email: email } });
      if (cart.lines.length) {
        eS('sendEvent', 'PurchasedItems', {
          OrderNumber: 'demo-' + Date.now().toString(36),
          GUID: cart.guid,
          PurchasedItems: cart.lines.map(function (line) {
            return { productKey: line.key, price: line.price, quantity: line.quantity };
          })
        });
      }
      save(newCart());
      form.hidden = true;
      document.getElementById('thanks').hidden = false;
    });
  }

  // "Add to cart" in a block spoor placed (the cart's cross-sell): spoor's script
  // reports it, and the shop puts the product in its cart.
  document.addEventListener('spoor:add-to-cart', function (event) {
    var item = document.querySelector('.spoor-item[data-spoor-product="' +
      CSS.escape(event.detail.productId) + '"]');
    var name = item && item.querySelector('.spoor-block__name');
    var button = item && item.querySelector('[data-spoor-add-to-cart]');
    add({
      key: event.detail.productId,
      name: name ? name.textContent : event.detail.productId,
      price: button ? button.getAttribute('data-price') : '0'
    });
    if (document.getElementById('cart')) {
      showCart();
    }
  });

  showCount(load());
  window.demoShop = { addButton: addButton, showCart: showCart, checkout: checkout };
})();
